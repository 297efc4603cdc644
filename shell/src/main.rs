#![forbid(unsafe_code)]

use std::io::{IsTerminal as _, Write as _};

use clap::Parser;
use playpod::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    init_logging(log_format);
    let result = match cli.command {
        Command::Game(args) => playpod::game::run(&args),
        Command::Control(args) => runtime().and_then(|rt| rt.block_on(playpod::control::run(args))),
        Command::Demo(args) => {
            runtime().and_then(|rt| rt.block_on(playpod::demo::run(args, log_format)))
        }
        Command::Pod(args) => runtime().and_then(|rt| rt.block_on(playpod::pod::run(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            match log_format {
                // Not `eprintln!`: a closed stderr must not turn the error into a panic.
                LogFormat::Text => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "playpod: error: {}",
                        playpod::error_text(&err)
                    );
                }
                // A log shipper gets the end of the command as one more JSON line.
                LogFormat::Json => {
                    tracing::error!(error = playpod::error_text(&err), "playpod: error")
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a file, a pipe or a container's log gets plain
    // text (and NO_COLOR turns them off anywhere, https://no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr piped to a reader that has gone) is lost;
        // saying so on that same stderr would panic.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
