//! The game's X window: drawing with core requests into a back pixmap that is copied to the
//! window once per frame, and key events read from X (so that XTEST drives the game exactly as it
//! drives an emulator).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, Gcontext, ImageFormat,
    ImageOrder, InputFocus, Mapping, NotifyMode, Pixmap, PropMode, Rectangle, VisualClass,
    Visualtype, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use super::keys::{DEFAULT_KEYMAP, KeyState, KeycodeTable};
use super::render::PixelFormat;

/// The largest PutImage the game sends, whatever the server allows: a long request holds up the
/// server (and the capture) while it runs.
const MAX_PUT_IMAGE_BYTES: usize = 256 * 1024;
/// How often the game asks the server for a reply, so x11rb can forget the requests before it.
const SYNC_EVERY_FRAMES: u32 = 60;
/// The shortest time between two attempts to take the focus back.
const REFOCUS_INTERVAL: Duration = Duration::from_secs(1);

/// The game's window on an X display.
#[derive(Debug)]
pub struct GameWindow {
    conn: RustConnection,
    display: String,
    window: Window,
    pixmap: Pixmap,
    copy_gc: Gcontext,
    width: u16,
    height: u16,
    depth: u8,
    colormap: u32,
    /// The root visual's pixel layout when it is TrueColor.
    true_color: Option<PixelFormat>,
    /// Bits per pixel of images at `depth`.
    bits_per_pixel: u8,
    min_keycode: u8,
    max_keycode: u8,
    keycodes: KeycodeTable,
    max_request_bytes: usize,
    frames_since_sync: u32,
    last_refocus: Option<Instant>,
}

impl GameWindow {
    /// Connects to `display`, creates a `width` x `height` window at 0,0, maps it and gives it
    /// the keyboard focus (there is no window manager to do it).
    pub fn open(display: &str, (width, height): (u16, u16)) -> anyhow::Result<GameWindow> {
        let (conn, screen_num) = RustConnection::connect(Some(display))
            .with_context(|| format!("cannot connect to the X display {display}"))?;
        let setup = conn.setup();
        let screen = setup
            .roots
            .get(screen_num)
            .with_context(|| format!("the X display {display} has no screen {screen_num}"))?;
        let (root, depth, visual, colormap) = (
            screen.root,
            screen.root_depth,
            screen.root_visual,
            screen.default_colormap,
        );
        let true_color = screen
            .allowed_depths
            .iter()
            .filter(|d| d.depth == depth)
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == visual)
            .and_then(|v| pixel_format(v, setup.image_byte_order));
        let bits_per_pixel = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map_or(0, |f| f.bits_per_pixel);
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        let black = screen.black_pixel;
        let context = |what: &'static str| move || format!("{what} on the X display {display}");

        let window = conn
            .generate_id()
            .with_context(context("no X resource id"))?;
        let events = EventMask::KEY_PRESS
            | EventMask::KEY_RELEASE
            | EventMask::EXPOSURE
            | EventMask::FOCUS_CHANGE;
        conn.create_window(
            depth,
            window,
            root,
            0,
            0,
            width,
            height,
            0,
            WindowClass::INPUT_OUTPUT,
            visual,
            &CreateWindowAux::new()
                .background_pixel(black)
                .event_mask(events),
        )?
        .check()
        .with_context(context("cannot create the game window"))?;
        conn.change_property8(
            PropMode::REPLACE,
            window,
            AtomEnum::WM_NAME,
            AtomEnum::STRING,
            b"playpod game",
        )?;
        let pixmap = conn
            .generate_id()
            .with_context(context("no X resource id"))?;
        conn.create_pixmap(depth, pixmap, window, width, height)?
            .check()
            .with_context(context("cannot create the back buffer"))?;
        let copy_gc = conn
            .generate_id()
            .with_context(context("no X resource id"))?;
        conn.create_gc(copy_gc, pixmap, &CreateGCAux::new().graphics_exposures(0))?
            .check()
            .with_context(context("cannot create a graphics context"))?;
        conn.map_window(window)?;
        conn.set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME)?
            .check()
            .with_context(context("cannot focus the game window"))?;

        let mut game = GameWindow {
            max_request_bytes: conn.maximum_request_bytes(),
            conn,
            display: display.to_owned(),
            window,
            pixmap,
            copy_gc,
            width,
            height,
            depth,
            colormap,
            true_color,
            bits_per_pixel,
            min_keycode,
            max_keycode,
            keycodes: KeycodeTable::new(0, 1, &[], &DEFAULT_KEYMAP),
            frames_since_sync: 0,
            last_refocus: None,
        };
        game.load_keyboard_mapping()?;
        tracing::info!(
            display = %game.display,
            window,
            width,
            height,
            depth,
            max_request_bytes = game.max_request_bytes,
            "game window up"
        );
        Ok(game)
    }

    /// Reads the keyboard mapping and rebuilds the keycode table from it.
    fn load_keyboard_mapping(&mut self) -> anyhow::Result<()> {
        let count = self
            .max_keycode
            .saturating_sub(self.min_keycode)
            .saturating_add(1);
        let reply = self
            .conn
            .get_keyboard_mapping(self.min_keycode, count)
            .map_err(|e| self.gone(e))?
            .reply()
            .with_context(|| format!("cannot read the keyboard mapping of {}", self.display))?;
        self.keycodes = KeycodeTable::new(
            self.min_keycode,
            reply.keysyms_per_keycode,
            &reply.keysyms,
            &DEFAULT_KEYMAP,
        );
        Ok(())
    }

    fn gone<E>(&self, err: E) -> anyhow::Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        anyhow::Error::new(err).context(format!(
            "lost the connection to the X server of display {}",
            self.display
        ))
    }

    /// One graphics context per colour, drawing into the back buffer.
    pub fn solid_gcs(&self, colours: &[[u8; 3]]) -> anyhow::Result<Vec<Gcontext>> {
        colours
            .iter()
            .map(|&rgb| {
                let pixel = self.pixel(rgb)?;
                let gc = self.conn.generate_id().map_err(|e| self.gone(e))?;
                let aux = CreateGCAux::new().foreground(pixel).graphics_exposures(0);
                self.conn
                    .create_gc(gc, self.pixmap, &aux)
                    .map_err(|e| self.gone(e))?
                    .check()
                    .context("cannot create a graphics context")?;
                Ok(gc)
            })
            .collect()
    }

    /// The pixel value of a colour: computed from a TrueColor visual, else allocated.
    fn pixel(&self, rgb: [u8; 3]) -> anyhow::Result<u32> {
        if let Some(format) = self.true_color {
            return Ok(format.pixel(rgb));
        }
        let wide = |c: u8| u16::from(c) * 257;
        let reply = self
            .conn
            .alloc_color(self.colormap, wide(rgb[0]), wide(rgb[1]), wide(rgb[2]))
            .map_err(|e| self.gone(e))?
            .reply()
            .with_context(|| format!("cannot allocate the colour {rgb:?}"))?;
        Ok(reply.pixel)
    }

    /// The layout of 32-bit ZPixmap images for [`GameWindow::put_image`], if the screen has one.
    pub fn image_format(&self) -> anyhow::Result<PixelFormat> {
        match self.true_color {
            Some(format) if self.depth == 24 && self.bits_per_pixel == 32 => Ok(format),
            _ => bail!(
                "the plasma needs a 24-bit TrueColor screen with 32 bits per pixel; display {} \
                 has depth {} ({} bits per pixel, TrueColor: {})",
                self.display,
                self.depth,
                self.bits_per_pixel,
                self.true_color.is_some()
            ),
        }
    }

    /// Fills rectangles in the back buffer.
    pub fn fill(&self, gc: Gcontext, rects: &[Rectangle]) -> anyhow::Result<()> {
        if !rects.is_empty() {
            self.conn
                .poly_fill_rectangle(self.pixmap, gc, rects)
                .map_err(|e| self.gone(e))?;
        }
        Ok(())
    }

    /// Puts a whole picture of 32-bit pixels (rows of `4 * width` bytes) into the back buffer,
    /// in horizontal strips that each fit in one request.
    pub fn put_image(&self, data: &[u8]) -> anyhow::Result<()> {
        let stride = usize::from(self.width) * 4;
        let rows = strip_rows(stride, self.max_request_bytes);
        for (i, strip) in data.chunks(stride * rows).enumerate() {
            let y = i16::try_from(i * rows).context("picture taller than X coordinates")?;
            let height = u16::try_from(strip.len() / stride).context("strip too tall")?;
            if height == 0 {
                break;
            }
            self.conn
                .put_image(
                    ImageFormat::Z_PIXMAP,
                    self.pixmap,
                    self.copy_gc,
                    self.width,
                    height,
                    0,
                    y,
                    0,
                    self.depth,
                    &strip[..usize::from(height) * stride],
                )
                .map_err(|e| self.gone(e))?;
        }
        Ok(())
    }

    /// Shows the back buffer: one CopyArea to the window, then a flush.
    pub fn present(&mut self) -> anyhow::Result<()> {
        self.conn
            .copy_area(
                self.pixmap,
                self.window,
                self.copy_gc,
                0,
                0,
                0,
                0,
                self.width,
                self.height,
            )
            .map_err(|e| self.gone(e))?;
        self.frames_since_sync += 1;
        if self.frames_since_sync >= SYNC_EVERY_FRAMES {
            // A request with a reply, whose reply is dropped when it comes: it lets x11rb forget
            // the requests sent before it, which it would otherwise keep until its own sync.
            self.frames_since_sync = 0;
            drop(self.conn.get_input_focus().map_err(|e| self.gone(e))?);
        }
        self.conn.flush().map_err(|e| self.gone(e))
    }

    /// Handles every event that has arrived: keys into `keys`; an X error or a lost connection
    /// is an error.
    pub fn pump_events(&mut self, keys: &mut KeyState) -> anyhow::Result<()> {
        while let Some(event) = self.conn.poll_for_event().map_err(|e| self.gone(e))? {
            match event {
                Event::KeyPress(e) => {
                    if let Some((player, key)) = self.keycodes.get(e.detail) {
                        keys.press(player, key);
                    }
                }
                Event::KeyRelease(e) => {
                    if let Some((player, key)) = self.keycodes.get(e.detail) {
                        keys.release(player, key);
                    }
                }
                Event::FocusOut(e) => {
                    // The releases of held keys will go elsewhere now.
                    keys.release_all();
                    if e.mode == NotifyMode::NORMAL {
                        self.take_focus_back()?;
                    }
                }
                Event::MappingNotify(e) if e.request == Mapping::KEYBOARD => {
                    self.load_keyboard_mapping()?;
                }
                Event::Error(e) => bail!("X error on display {}: {e:?}", self.display),
                _ => {}
            }
        }
        Ok(())
    }

    /// Another client took the keyboard focus: take it back, at most once a second so that two
    /// clients never fight in a loop.
    fn take_focus_back(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if self
            .last_refocus
            .is_some_and(|t| now.duration_since(t) < REFOCUS_INTERVAL)
        {
            return Ok(());
        }
        self.last_refocus = Some(now);
        tracing::debug!(display = %self.display, "focus lost; taking it back");
        self.conn
            .set_input_focus(InputFocus::PARENT, self.window, x11rb::CURRENT_TIME)
            .map_err(|e| self.gone(e))?;
        Ok(())
    }
}

/// Rows per PutImage strip: as many as fit in one request (24 bytes of header), capped.
fn strip_rows(stride: usize, max_request_bytes: usize) -> usize {
    let budget = max_request_bytes
        .min(MAX_PUT_IMAGE_BYTES)
        .saturating_sub(24);
    (budget / stride.max(1)).max(1)
}

/// The pixel layout of a TrueColor visual.
fn pixel_format(visual: &Visualtype, order: ImageOrder) -> Option<PixelFormat> {
    (visual.class == VisualClass::TRUE_COLOR).then_some(PixelFormat {
        red_mask: visual.red_mask,
        green_mask: visual.green_mask,
        blue_mask: visual.blue_mask,
        msb_first: order == ImageOrder::MSB_FIRST,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fit_in_a_request() {
        // The core protocol's limit (no BIG-REQUESTS): 262140 bytes.
        assert_eq!(strip_rows(768 * 4, 262_140), 85);
        // BIG-REQUESTS: capped all the same.
        assert_eq!(strip_rows(768 * 4, 16 << 20), 85);
        // A tiny server limit still sends one row at a time.
        assert_eq!(strip_rows(4096 * 4, 4096), 1);
    }
}
