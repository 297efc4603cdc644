//! CUDA colour conversion: BGRX -> YUV 4:2:0 on the GPU, reading the framebuffer in place.
//!
//! The CUDA driver is loaded at run time (cudarc, `dynamic-loading`): playpod builds and runs
//! with no toolkit and no driver, and [`Gpu::open`] says why there is no GPU instead of failing
//! later. The kernel (`ffi/cuda/bgrx_to_yuv420.cu`) ships as PTX, compiled once by
//! `ffi/cuda/generate-ptx.sh`; the driver compiles it for the GPU at start.
//!
//! Zero copy: the framebuffer mapping ([`crate::MappedFile`], [`crate::AttachedShm`]) is
//! registered as page-locked host memory mapped into the GPU's address space
//! (`cuMemHostRegister` with `DEVICEMAP | READ_ONLY`), so the kernel reads Xvfb's pages over
//! PCIe as it converts, with no staging copy. Sources that are not such a mapping are uploaded
//! into a device buffer first ([`Gpu::upload_and_convert`]).

use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError, result,
    sys,
};
use cudarc::nvrtc::Ptx;

/// The kernel, compiled to PTX for compute capability 7.5 and newer.
const KERNEL_PTX: &str = include_str!("../cuda/bgrx_to_yuv420.ptx");
const KERNEL_NAME: &str = "bgrx_to_yuv420";
/// Threads per block: 16 x 8 chroma blocks (32 x 16 pixels).
const BLOCK: (u32, u32) = (16, 8);

/// Why the GPU path cannot be used. Every variant is a reason shown in logs and `/readyz`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver (libcuda.so cannot be loaded)")]
    NoDriver,
    #[error("the CUDA driver sees no GPU")]
    NoDevice,
    #[error("CUDA: {what} failed: {error}")]
    Driver { what: &'static str, error: String },
    #[error("picture of {width}x{height} cannot be converted on the GPU (sizes must be even)")]
    Size { width: u32, height: u32 },
    #[error("source of {len} bytes is too short for {width}x{height} with a stride of {stride}")]
    Short {
        len: usize,
        width: u32,
        height: u32,
        stride: usize,
    },
    #[error("output buffer of {len} bytes is too short for {need}")]
    OutputShort { len: usize, need: usize },
}

fn driver(what: &'static str) -> impl FnOnce(DriverError) -> GpuError {
    move |error| GpuError::Driver {
        what,
        error: format!("{error:?}"),
    }
}

/// One GPU, its context and stream, and the conversion kernel loaded on it.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernel: CudaFunction,
    name: String,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("name", &self.name).finish()
    }
}

impl Gpu {
    /// Opens GPU 0. Checks that the driver library exists before touching it (cudarc would
    /// panic on a missing library).
    pub fn open() -> Result<Arc<Gpu>, GpuError> {
        // SAFETY: `is_culib_present` only tries to dlopen the CUDA driver library and reports
        // whether it could; it calls nothing inside it.
        if !unsafe { sys::is_culib_present() } {
            return Err(GpuError::NoDriver);
        }
        let count = CudaContext::device_count().map_err(driver("cuDeviceGetCount"))?;
        if count < 1 {
            return Err(GpuError::NoDevice);
        }
        let ctx = CudaContext::new(0).map_err(driver("creating a context on GPU 0"))?;
        // SAFETY: all of this context's work goes to one stream (`stream` below) and every
        // conversion is waited for before its picture is read (by a download or by NVENC, whose
        // encode is synchronous), so cudarc's per-buffer events (a record and a wait around
        // every access) order nothing here; without them a frame makes no event calls. Set
        // before any buffer exists, as cudarc requires.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().unwrap_or_else(|_| "GPU 0".to_owned());
        let module = ctx
            .load_module(Ptx::from_src(KERNEL_PTX))
            .map_err(driver("loading the conversion kernel"))?;
        let kernel = module
            .load_function(KERNEL_NAME)
            .map_err(driver("finding the conversion kernel"))?;
        let stream = ctx.default_stream();
        Ok(Arc::new(Gpu {
            ctx,
            stream,
            kernel,
            name,
        }))
    }

    /// The GPU's name, as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver's CUDA context handle, for NVENC's CUDA sessions.
    pub(crate) fn raw_context(&self) -> sys::CUcontext {
        self.ctx.cu_ctx()
    }

    /// Makes the context current on the calling thread (CUDA contexts are per thread).
    pub fn bind(&self) -> Result<(), GpuError> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))
    }

    /// A device picture for `width` x `height` in `layout`.
    pub fn alloc_picture(
        self: &Arc<Self>,
        width: u32,
        height: u32,
        layout: ChromaLayout,
    ) -> Result<DevicePicture, GpuError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(GpuError::Size { width, height });
        }
        let pitch = match layout {
            // NVENC reads pitched surfaces; 256-byte rows suit every generation.
            ChromaLayout::Nv12 => (width as usize).next_multiple_of(256),
            ChromaLayout::I420 => width as usize,
        };
        let len = pitch * height as usize * 3 / 2;
        let buffer = self
            .stream
            .alloc_zeros::<u8>(len)
            .map_err(driver("allocating a picture"))?;
        Ok(DevicePicture {
            gpu: self.clone(),
            buffer,
            width,
            height,
            pitch,
            layout,
        })
    }

    /// Copies `bytes` (BGRX rows of `stride` bytes, `dst`'s size) to the GPU through
    /// `staging` (allocated on first use, or when a larger frame comes), then converts into `dst`.
    pub fn upload_and_convert(
        &self,
        bytes: &[u8],
        stride: usize,
        staging: &mut Option<Staging>,
        dst: &mut DevicePicture,
    ) -> Result<(), GpuError> {
        let (width, height) = (dst.width, dst.height);
        check_source(bytes.len(), stride, width, height)?;
        let bytes = &bytes[..(stride * height as usize).min(bytes.len())];
        let buffer = match staging.take() {
            Some(Staging(buffer)) if buffer.len() >= bytes.len() => buffer,
            _ => self
                .stream
                .alloc_zeros::<u8>(bytes.len())
                .map_err(driver("allocating a staging buffer"))?,
        };
        let Staging(buffer) = staging.insert(Staging(buffer));
        self.stream
            .memcpy_htod(bytes, &mut buffer.slice_mut(..bytes.len()))
            .map_err(driver("uploading a frame"))?;
        let (ptr, _sync) = buffer.device_ptr(&self.stream);
        self.launch(ptr, stride, width, height, dst)
    }

    /// Converts a registered framebuffer into `dst`, waiting until it is done.
    pub fn convert(&self, src: &DeviceFrame<'_>, dst: &mut DevicePicture) -> Result<(), GpuError> {
        self.launch(src.device_ptr, src.stride, src.width, src.height, dst)
    }

    fn launch(
        &self,
        src: sys::CUdeviceptr,
        stride: usize,
        width: u32,
        height: u32,
        dst: &mut DevicePicture,
    ) -> Result<(), GpuError> {
        if (width, height) != (dst.width, dst.height) {
            return Err(GpuError::Size { width, height });
        }
        self.bind()?;
        let stride = u32::try_from(stride).map_err(|_| GpuError::Size { width, height })?;
        let pitch = dst.pitch as u32;
        let (base, _sync) = dst.buffer.device_ptr_mut(&self.stream);
        let luma_len = dst.pitch as u64 * u64::from(height);
        let (u, v, c_pitch, c_step) = match dst.layout {
            ChromaLayout::Nv12 => (base + luma_len, base + luma_len + 1, pitch, 2u32),
            ChromaLayout::I420 => {
                let quarter = u64::from(width / 2) * u64::from(height / 2);
                (base + luma_len, base + luma_len + quarter, width / 2, 1u32)
            }
        };
        let grid = (
            (width / 2).div_ceil(BLOCK.0),
            (height / 2).div_ceil(BLOCK.1),
            1,
        );
        // The kernel's parameters, by address, on the stack: a frame allocates nothing.
        let mut args = [
            ptr::from_ref(&src).cast_mut().cast::<c_void>(),
            ptr::from_ref(&stride).cast_mut().cast(),
            ptr::from_ref(&width).cast_mut().cast(),
            ptr::from_ref(&height).cast_mut().cast(),
            ptr::from_ref(&base).cast_mut().cast(),
            ptr::from_ref(&pitch).cast_mut().cast(),
            ptr::from_ref(&u).cast_mut().cast(),
            ptr::from_ref(&v).cast_mut().cast(),
            ptr::from_ref(&c_pitch).cast_mut().cast(),
            ptr::from_ref(&c_step).cast_mut().cast(),
        ];
        // SAFETY: the arguments match the kernel's signature in bgrx_to_yuv420.cu one for one
        // (pointers as 64-bit device addresses, the rest as u32). The kernel reads
        // `stride * (height - 1) + 4 * width` bytes from `src`, which the callers checked
        // (`check_source` for uploads; registrations cover the whole mapping, checked by
        // `DeviceFrame`'s constructor), and writes inside `dst`'s buffer: rows of `pitch` bytes
        // for `height` luma rows and `height / 2` chroma rows whose widest write ends at
        // `c_pitch * (height/2 - 1) + c_step * (width/2 - 1) + 1` past the chroma start, within
        // the `pitch * height / 2` bytes allocated for chroma in both layouts. `args` points at
        // locals that outlive the call (cuLaunchKernel copies the values); the context is
        // current (bound above) and `stream` belongs to it.
        unsafe {
            result::launch_kernel(
                self.kernel.cu_function(),
                grid,
                (BLOCK.0, BLOCK.1, 1),
                0,
                self.stream.cu_stream(),
                &mut args,
            )
        }
        .map_err(driver("launching the conversion kernel"))?;
        self.stream
            .synchronize()
            .map_err(driver("waiting for the conversion"))
    }

    /// Copies an I420 device picture into `out` (Y, then U, then V, tightly packed).
    pub fn download_i420(&self, src: &DevicePicture, out: &mut [u8]) -> Result<(), GpuError> {
        let need = src.width as usize * src.height as usize * 3 / 2;
        if src.layout != ChromaLayout::I420 || out.len() < need {
            return Err(GpuError::OutputShort {
                len: out.len(),
                need,
            });
        }
        self.stream
            .memcpy_dtoh(&src.buffer, &mut out[..need])
            .map_err(driver("downloading a picture"))
    }
}

fn check_source(len: usize, stride: usize, width: u32, height: u32) -> Result<(), GpuError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(GpuError::Size { width, height });
    }
    let need = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(4 * width as usize));
    if stride < 4 * width as usize || need.is_none_or(|need| len < need) {
        return Err(GpuError::Short {
            len,
            width,
            height,
            stride,
        });
    }
    Ok(())
}

/// A device buffer frames are uploaded through when they are not registered host memory.
pub struct Staging(CudaSlice<u8>);

impl fmt::Debug for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Staging").field(&self.0.len()).finish()
    }
}

/// How a device picture stores chroma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChromaLayout {
    /// Y plane, then interleaved UV: what NVENC takes.
    Nv12,
    /// Y, U and V planes, tightly packed: what the CPU encoder takes.
    I420,
}

/// A YUV 4:2:0 picture in GPU memory.
pub struct DevicePicture {
    gpu: Arc<Gpu>,
    buffer: CudaSlice<u8>,
    width: u32,
    height: u32,
    pitch: usize,
    layout: ChromaLayout,
}

impl fmt::Debug for DevicePicture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePicture")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pitch", &self.pitch)
            .field("layout", &self.layout)
            .finish()
    }
}

impl DevicePicture {
    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row to the next, in both planes.
    pub fn pitch(&self) -> usize {
        self.pitch
    }

    pub fn layout(&self) -> ChromaLayout {
        self.layout
    }

    /// The device address of the picture (what NVENC registers).
    pub fn device_address(&self) -> u64 {
        let (ptr, _sync) = self.buffer.device_ptr(&self.gpu.stream);
        ptr
    }
}

/// Host memory registered with the GPU (page-locked, mapped into its address space).
/// Unregistered on drop; owned by the mapping it covers, which drops it first.
pub(crate) struct HostRegistration {
    gpu: Arc<Gpu>,
    host: *mut c_void,
    len: usize,
    device_ptr: sys::CUdeviceptr,
}

impl fmt::Debug for HostRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRegistration")
            .field("gpu", &self.gpu.name)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the registration is a pair of addresses plus an owned GPU handle; the CUDA driver
// API may be called from any thread once the context is bound, which `Drop` does.
unsafe impl Send for HostRegistration {}

impl HostRegistration {
    /// Registers `bytes` read-only with `gpu`.
    ///
    /// # Safety
    ///
    /// The memory behind `bytes` must stay mapped until the registration is dropped: the owner
    /// of the mapping keeps the registration in a field dropped before the mapping.
    pub(crate) unsafe fn register(gpu: &Arc<Gpu>, bytes: &[u8]) -> Result<Self, GpuError> {
        gpu.bind()?;
        let host = bytes.as_ptr().cast_mut().cast::<c_void>();
        let flags = sys::CU_MEMHOSTREGISTER_DEVICEMAP | sys::CU_MEMHOSTREGISTER_READ_ONLY;
        // SAFETY: `host..host+len` is a live mapping (the caller's contract) that the GPU only
        // reads (READ_ONLY); the context is current on this thread.
        let status = unsafe { sys::cuMemHostRegister_v2(host, bytes.len(), flags) };
        status.result().map_err(driver(
            "registering the framebuffer with the GPU (cuMemHostRegister)",
        ))?;
        let mut device_ptr: sys::CUdeviceptr = 0;
        // SAFETY: `host` was registered with DEVICEMAP just above; the out pointer is valid.
        let status = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device_ptr, host, 0) };
        let registration = HostRegistration {
            gpu: gpu.clone(),
            host,
            len: bytes.len(),
            device_ptr,
        };
        status
            .result()
            .map_err(driver("mapping the framebuffer into the GPU"))?;
        Ok(registration)
    }

    /// Whether this registration was made with `gpu`.
    pub(crate) fn is_for(&self, gpu: &Arc<Gpu>) -> bool {
        Arc::ptr_eq(&self.gpu, gpu)
    }

    /// A view of `width` x `height` BGRX pixels starting `offset` bytes into the registration.
    pub(crate) fn frame(
        &self,
        offset: usize,
        stride: usize,
        width: u32,
        height: u32,
    ) -> Result<DeviceFrame<'_>, GpuError> {
        check_source(self.len.saturating_sub(offset), stride, width, height)?;
        Ok(DeviceFrame {
            device_ptr: self.device_ptr + offset as u64,
            stride,
            width,
            height,
            _registration: PhantomData,
        })
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            // SAFETY: `host` was registered by `register` and not unregistered since; the memory
            // is still mapped (the owner drops the registration before its mapping).
            let _ = unsafe { sys::cuMemHostUnregister(self.host) }.result();
        }
    }
}

/// A framebuffer the GPU reads in place, borrowed from the mapping that registered it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFrame<'a> {
    device_ptr: sys::CUdeviceptr,
    stride: usize,
    width: u32,
    height: u32,
    _registration: PhantomData<&'a HostRegistration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_checked_before_any_launch() {
        assert!(check_source(768 * 4 * 768, 768 * 4, 768, 768).is_ok());
        assert!(matches!(
            check_source(768 * 4 * 767, 768 * 4, 768, 768),
            Err(GpuError::Short { .. })
        ));
        assert!(matches!(
            check_source(1 << 30, 100, 768, 768),
            Err(GpuError::Short { .. })
        ));
        assert!(matches!(
            check_source(1 << 30, 4000, 767, 768),
            Err(GpuError::Size { .. })
        ));
        assert!(matches!(
            check_source(1 << 30, usize::MAX / 2, 768, 768),
            Err(GpuError::Short { .. })
        ));
    }

    #[test]
    fn the_kernel_ships_with_its_entry_point() {
        assert!(KERNEL_PTX.contains(".visible .entry bgrx_to_yuv420("));
        assert!(KERNEL_PTX.contains(".target sm_75"));
    }

    #[test]
    fn open_reports_why_there_is_no_gpu() {
        match Gpu::open() {
            Ok(gpu) => println!("GPU present: {}", gpu.name()),
            Err(err) => {
                println!("no GPU here: {err}");
                assert!(!err.to_string().is_empty());
            }
        }
    }
}
