use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::cuda::{DeviceFrame, Gpu, GpuError, HostRegistration};

/// Why a shared framebuffer could not be mapped or attached.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("cannot open framebuffer file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot map framebuffer file {path}: {source}")]
    Map { path: PathBuf, source: io::Error },
    #[error("framebuffer file {path} is empty")]
    Empty { path: PathBuf },
    #[error("cannot query shared-memory segment {id}: {source}")]
    Stat { id: i32, source: io::Error },
    #[error("cannot attach shared-memory segment {id}: {source}")]
    Attach { id: i32, source: io::Error },
    #[error("cannot create a shared-memory segment of {size} bytes: {source}")]
    Create { size: usize, source: io::Error },
    #[error("cannot remove shared-memory segment {id}: {source}")]
    Remove { id: i32, source: io::Error },
}

/// A read-only, shared mapping of a file (Xvfb's `-fbdir` framebuffer, `Xvfb_screen0`).
///
/// The mapping sees every change the writer makes, with no copy and no system call per read.
#[derive(Debug)]
pub struct MappedFile {
    // Declared before `map`, so dropped before it: the GPU stops using the pages first.
    gpu: Option<HostRegistration>,
    map: memmap2::Mmap,
    path: PathBuf,
}

impl MappedFile {
    /// Maps `path` read-only and shared.
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        let file = File::open(path).map_err(|source| ShmError::Open {
            path: path.to_owned(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| ShmError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(ShmError::Empty {
                path: path.to_owned(),
            });
        }
        // SAFETY: the mapping is read-only and shared, and only ever exposed as `&[u8]`, for
        // which every byte pattern is valid. Another process (Xvfb) writes the file while we
        // read; that can tear a picture but cannot make a `u8` invalid (see the crate docs).
        // If the file is truncated underneath us reads would fault: Xvfb never truncates its
        // framebuffer while running, it only unlinks it on exit, which keeps our pages alive.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|source| ShmError::Map {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            gpu: None,
            map,
            path: path.to_owned(),
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The `width` x `height` BGRX picture at `offset` as `gpu` reads it in place: the mapping
    /// is registered with the GPU on the first call and stays registered while it lives.
    pub fn gpu_frame(
        &mut self,
        gpu: &Arc<Gpu>,
        offset: usize,
        stride: usize,
        width: u32,
        height: u32,
    ) -> Result<DeviceFrame<'_>, GpuError> {
        // SAFETY: the registration lives in `self.gpu`, dropped before `self.map` (field
        // order), so the pages stay mapped for as long as the GPU may read them.
        let registration = unsafe { registered(&mut self.gpu, gpu, &self.map) }?;
        registration.frame(offset, stride, width, height)
    }

    /// The file that is mapped.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A read-only attachment of an existing SysV shared-memory segment (Xvfb's `-shmem`).
#[derive(Debug)]
pub struct AttachedShm {
    // Dropped (in `Drop`) before the segment is detached.
    gpu: Option<HostRegistration>,
    // Invariant: `ptr` is the address `shmat` returned for segment `id`, attached read-only,
    // valid for `len` bytes until `Drop` detaches it.
    ptr: NonNull<u8>,
    len: usize,
    id: i32,
}

// SAFETY: the attachment is plain read-only memory owned by this value; nothing about it is tied
// to the thread that made it, and `&AttachedShm` only hands out `&[u8]`.
unsafe impl Send for AttachedShm {}
// SAFETY: shared access only reads (see above).
unsafe impl Sync for AttachedShm {}

impl AttachedShm {
    /// Attaches segment `id` read-only.
    pub fn attach(id: i32) -> Result<Self, ShmError> {
        let len = segment_size(id)?;
        // SAFETY: shmat with a null address lets the kernel pick where to map; SHM_RDONLY
        // means we can never write to the segment. The result is checked below.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
        if addr as isize == -1 {
            return Err(ShmError::Attach {
                id,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| ShmError::Attach {
            id,
            source: io::Error::other("shmat returned a null address"),
        })?;
        Ok(Self {
            gpu: None,
            ptr,
            len,
            id,
        })
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes while `self` lives (field invariant); the
        // bytes may change under us, which a `u8` tolerates (see the crate docs).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The segment id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The `width` x `height` BGRX picture at `offset` as `gpu` reads it in place: the segment
    /// is registered with the GPU on the first call and stays registered while attached.
    pub fn gpu_frame(
        &mut self,
        gpu: &Arc<Gpu>,
        offset: usize,
        stride: usize,
        width: u32,
        height: u32,
    ) -> Result<DeviceFrame<'_>, GpuError> {
        // SAFETY: `ptr` is valid for `len` bytes while attached (field invariant).
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        // SAFETY: `Drop` drops the registration before it detaches the segment.
        let registration = unsafe { registered(&mut self.gpu, gpu, bytes) }?;
        registration.frame(offset, stride, width, height)
    }
}

/// The registration in `slot` for `gpu`, made on first use.
///
/// # Safety
///
/// `bytes` must stay mapped until `slot`'s registration is dropped.
unsafe fn registered<'a>(
    slot: &'a mut Option<HostRegistration>,
    gpu: &Arc<Gpu>,
    bytes: &[u8],
) -> Result<&'a HostRegistration, GpuError> {
    let registration = match slot.take() {
        Some(registration) if registration.is_for(gpu) => registration,
        // SAFETY: the caller keeps `bytes` mapped while the registration lives.
        _ => unsafe { HostRegistration::register(gpu, bytes) }?,
    };
    Ok(slot.insert(registration))
}

impl Drop for AttachedShm {
    fn drop(&mut self) {
        // The GPU stops reading the pages before they go.
        self.gpu = None;
        // SAFETY: `ptr` came from shmat and is detached exactly once, here.
        let rc = unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
        debug_assert_eq!(rc, 0, "shmdt of an address shmat returned cannot fail");
    }
}

/// A private SysV segment we own, readable and writable, for MIT-SHM `XShmGetImage`.
///
/// It is marked for removal right after it is attached: Linux lets other processes (the X
/// server) still attach it by id, and the kernel frees it once the last attachment goes, so it
/// can never be left behind, not even if we are killed.
#[derive(Debug)]
pub struct OwnedShm {
    // Invariant: as for `AttachedShm`, but attached read-write.
    ptr: NonNull<u8>,
    len: usize,
    id: i32,
}

// SAFETY: see `AttachedShm`; mutation needs `&mut self`.
unsafe impl Send for OwnedShm {}
// SAFETY: shared access only reads.
unsafe impl Sync for OwnedShm {}

impl OwnedShm {
    /// Creates and attaches a segment of `size` bytes, owner read-write only.
    pub fn create(size: usize) -> Result<Self, ShmError> {
        // SAFETY: plain system call with no pointers.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(ShmError::Create {
                size,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: as in `AttachedShm::attach`, read-write this time; checked below.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        let attach_err = io::Error::last_os_error();
        // Mark for removal whatever happened, so the segment never outlives us.
        let removed = remove_shm_segment(id);
        if addr as isize == -1 {
            return Err(ShmError::Attach {
                id,
                source: attach_err,
            });
        }
        let Some(ptr) = NonNull::new(addr.cast::<u8>()) else {
            return Err(ShmError::Attach {
                id,
                source: io::Error::other("shmat returned a null address"),
            });
        };
        let shm = Self { ptr, len: size, id };
        removed?;
        Ok(shm)
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes while `self` lives (field invariant).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The segment id, to hand to the X server.
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl Drop for OwnedShm {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from shmat and is detached exactly once, here.
        let rc = unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
        debug_assert_eq!(rc, 0, "shmdt of an address shmat returned cannot fail");
    }
}

fn segment_size(id: i32) -> Result<usize, ShmError> {
    // SAFETY: shmid_ds is plain old data; all-zero is a valid value that shmctl overwrites.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds into the valid, exclusive pointer we pass.
    let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if rc != 0 {
        return Err(ShmError::Stat {
            id,
            source: io::Error::last_os_error(),
        });
    }
    Ok(ds.shm_segsz)
}

/// Marks SysV segment `id` for removal (`IPC_RMID`): it goes once nobody has it attached.
///
/// Xvfb `-shmem` leaves its segment behind on exit; whoever started it removes it with this.
pub fn remove_shm_segment(id: i32) -> Result<(), ShmError> {
    // SAFETY: IPC_RMID takes no buffer; a null pointer is what the manual asks for.
    let rc = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(ShmError::Remove {
            id,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn mapped_file_sees_later_writes() {
        let mut file = tempfile_in_tmp();
        file.1.write_all(&[1, 2, 3, 4]).unwrap();
        file.1.flush().unwrap();
        let map = MappedFile::open(&file.0).unwrap();
        assert_eq!(map.bytes(), &[1, 2, 3, 4]);
        std::fs::write(&file.0, [9, 8, 7, 6]).unwrap();
        assert_eq!(map.bytes(), &[9, 8, 7, 6]);
        std::fs::remove_file(&file.0).unwrap();
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let missing = Path::new("/nonexistent/playpod/Xvfb_screen0");
        assert!(matches!(
            MappedFile::open(missing),
            Err(ShmError::Open { .. })
        ));
        let file = tempfile_in_tmp();
        assert!(matches!(
            MappedFile::open(&file.0),
            Err(ShmError::Empty { .. })
        ));
        std::fs::remove_file(&file.0).unwrap();
    }

    #[test]
    fn owned_segment_is_attachable_and_never_left_behind() {
        let owned = OwnedShm::create(4096).unwrap();
        assert_eq!(owned.bytes().len(), 4096);
        // Still attachable by id after IPC_RMID (Linux), as the X server will do.
        let other = AttachedShm::attach(owned.id()).unwrap();
        assert_eq!(other.bytes().len(), 4096);
        let id = owned.id();
        drop(other);
        drop(owned);
        assert!(matches!(
            AttachedShm::attach(id),
            Err(ShmError::Stat { .. })
        ));
    }

    #[test]
    fn unknown_segment_is_an_error() {
        assert!(AttachedShm::attach(-1).is_err());
        assert!(remove_shm_segment(-1).is_err());
    }

    fn tempfile_in_tmp() -> (PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "playpod-ffi-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::create(&path).unwrap();
        (path, file)
    }
}
