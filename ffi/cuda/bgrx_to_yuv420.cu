// BGRX -> YUV 4:2:0, BT.601 limited range, on the GPU.
//
// The same arithmetic, in the same order, as the scalar reference in
// hotpath/src/convert.rs (`bgrx_to_i420_scalar`): single-precision floats, no fused
// multiply-add (compiled with --fmad=false), IEEE division, round half away from zero. Luma
// per pixel; chroma from the mean colour of each 2x2 block.
//
// One thread per 2x2 block. The chroma output is planar (I420: `c_step` 1, `u` and `v` two
// planes) or interleaved (NV12: `c_step` 2, `v` = `u` + 1), so one kernel feeds both the CPU
// encoder (I420) and NVENC (NV12).
//
// ffi/cuda/generate-ptx.sh compiles this file to bgrx_to_yuv420.ptx, which is committed:
// running playpod needs the NVIDIA driver only, not NVRTC or the CUDA toolkit.

__device__ __forceinline__ unsigned char to_u8(float x) {
    float r = roundf(x);
    r = fminf(fmaxf(r, 0.0f), 255.0f);
    return (unsigned char)r;
}

__device__ __forceinline__ float luma(float r, float g, float b) {
    return 16.0f + (65.481f * r + 128.553f * g + 24.966f * b) / 255.0f;
}

extern "C" __global__ void bgrx_to_yuv420(
    const unsigned char* __restrict__ src, unsigned int src_stride,
    unsigned int width, unsigned int height,
    unsigned char* __restrict__ y, unsigned int y_pitch,
    unsigned char* __restrict__ u, unsigned char* __restrict__ v,
    unsigned int c_pitch, unsigned int c_step)
{
    unsigned int cx = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int cy = blockIdx.y * blockDim.y + threadIdx.y;
    if (cx >= width / 2 || cy >= height / 2) {
        return;
    }
    float rs = 0.0f, gs = 0.0f, bs = 0.0f;
    // The reference sums the block in the order (0,0) (1,0) (0,1) (1,1).
    for (unsigned int dy = 0; dy < 2; dy++) {
        for (unsigned int dx = 0; dx < 2; dx++) {
            unsigned int px = cx * 2 + dx, py = cy * 2 + dy;
            const unsigned char* p = src + (size_t)py * src_stride + (size_t)px * 4;
            float b = (float)p[0], g = (float)p[1], r = (float)p[2];
            y[(size_t)py * y_pitch + px] = to_u8(luma(r, g, b));
            rs += r;
            gs += g;
            bs += b;
        }
    }
    float r = rs / 4.0f, g = gs / 4.0f, b = bs / 4.0f;
    float uf = 128.0f + (-37.797f * r - 74.203f * g + 112.0f * b) / 255.0f;
    float vf = 128.0f + (112.0f * r - 93.786f * g - 18.214f * b) / 255.0f;
    size_t at = (size_t)cy * c_pitch + (size_t)cx * c_step;
    u[at] = to_u8(uf);
    v[at] = to_u8(vf);
}
