//! All of playpod's `unsafe` code, each block with the reason it is sound.
//!
//! The rest of the workspace (`playpod-hotpath`, `playpod`) forbids `unsafe` and reaches the
//! operating system through the safe types here:
//!
//! - [`MappedFile`]: a read-only mapping of the framebuffer file Xvfb writes with `-fbdir`.
//! - [`AttachedShm`]: a read-only attachment of the SysV segment Xvfb makes with `-shmem`.
//! - [`OwnedShm`]: a private SysV segment we create for MIT-SHM `XShmGetImage`, removed
//!   as soon as it is attached so it can never outlive the process.
//! - [`supervised`] and [`terminate`]: child processes that cannot outlive `playpod demo` and that only it stops.
//! - [`CountingAllocator`]: the system allocator, counting, for zero-allocation tests.
//! - [`cuda`]: BGRX -> YUV 4:2:0 on the GPU, reading the registered framebuffer in place.
//! - [`nvenc`]: NVENC bindings (bindgen, API 12.1) loaded at run time, and a safe session layer.
//! - [`tcp`]: a connection's round-trip time, from the kernel's `TCP_INFO`.
//! - [`openh264`]: encoder settings the `openh264` crate's safe API does not offer (the
//!   target bitrate, changed while encoding).
//!
//! # Shared memory written by another process
//!
//! The bytes behind these mappings are written by the X server while we read them. They are
//! exposed as `&[u8]`: every bit pattern is a valid `u8`, we never hold references into the
//! memory across frames for anything but reading pixels, and a torn read only ever yields a
//! partially updated picture (the same thing a screen grab of a moving game shows), never an
//! invalid value. The X server never unmaps or shrinks the memory while we hold our own mapping
//! or attachment: the kernel keeps the pages alive until we drop it.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod alloc_count;
pub mod cuda;
pub mod nvenc;
pub mod openh264;
mod process;
mod shm;
pub mod tcp;

pub use alloc_count::{CountingAllocator, count_allocations};
pub use process::{supervised, terminate};

pub use shm::{AttachedShm, MappedFile, OwnedShm, ShmError, remove_shm_segment};
