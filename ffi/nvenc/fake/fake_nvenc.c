/*
 * A stand-in for the driver's libnvidia-encode.so.1, compiled from the same vendored
 * nvEncodeAPI.h, for the contract tests of playpod's NVENC layer (ffi/src/nvenc/contract.rs).
 *
 * It is no encoder. It checks what a driver checks of its caller, with the header's own macros
 * and layouts: the version of every structure, the fields playpod sets (read back through the C
 * layout, so a binding that disagrees with the header shows up as a wrong value), that handles
 * belong to their session, and the order of the calls (map before encode, lock after encode,
 * unmap and unlock before unregister and destroy, nothing left when the session is destroyed),
 * and that a reconfiguration changes the rate and nothing else.
 * Every call is written to a log the tests read; any call can be made to fail once.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nvEncodeAPI.h"

#define MAX_OBJECTS 8

enum kind { FREE, SESSION, RESOURCE, BUFFER };

struct object {
    enum kind kind;
    struct object *session;
    /* Resources: the registered picture; mapped while an encode may read it. */
    uint64_t address;
    uint32_t width, height, pitch;
    int mapped;
    /* Buffers: the last access unit; locked while the caller reads it. */
    uint8_t data[64];
    uint32_t len;
    int idr, locked;
    /* Sessions. */
    int initialized;
    uint32_t width_init, height_init;
    /* What the session was initialised with (the config pointer cleared), for reconfiguring. */
    NV_ENC_INITIALIZE_PARAMS init;
    NV_ENC_CONFIG config;
};

static struct object objects[MAX_OBJECTS];
static char log_text[16384];
static size_t log_len;
static uint32_t max_version = (NVENCAPI_MAJOR_VERSION << 4) | NVENCAPI_MINOR_VERSION;
static int offers_h264 = 1;
static char fail_call[64];
static NVENCSTATUS fail_status;
static char last_error[256];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(log_text + log_len, sizeof log_text - log_len, fmt, ap);
    va_end(ap);
    if (n > 0 && log_len + (size_t)n + 1 < sizeof log_text) {
        log_len += (size_t)n;
        log_text[log_len++] = '\n';
        log_text[log_len] = 0;
    }
}

static NVENCSTATUS refuse(NVENCSTATUS status, const char *call, const char *why) {
    snprintf(last_error, sizeof last_error, "%s: %s", call, why);
    say("%s REFUSED %s", call, why);
    return status;
}

/* A failure planted by the test for this call, once. */
static int planted(const char *call, NVENCSTATUS *status) {
    if (fail_call[0] && strcmp(fail_call, call) == 0) {
        fail_call[0] = 0;
        *status = fail_status;
        snprintf(last_error, sizeof last_error, "%s: planted failure", call);
        say("%s FAILED %d", call, (int)fail_status);
        return 1;
    }
    return 0;
}

#define ENTER(call)                                   \
    do {                                              \
        NVENCSTATUS planted_status;                   \
        if (planted(call, &planted_status))           \
            return planted_status;                    \
    } while (0)

/* `struct object *NAME`: the session `encoder` names, or refuse the call. */
#define FIND_SESSION(name)                                                                 \
    struct object *name = find(encoder, SESSION, NULL);                                    \
    if (!name) return refuse(NV_ENC_ERR_INVALID_ENCODERDEVICE, call, "no such session")

/* The caller's structure: present, and of the version the header gives it. */
#define CHECK_PARAMS(params, want)                                                         \
    do {                                                                                   \
        if (!(params)) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null params");        \
        if ((params)->version != (want)) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "version"); \
    } while (0)

static struct object *new_object(enum kind kind, struct object *session) {
    for (int i = 0; i < MAX_OBJECTS; i++) {
        if (objects[i].kind == FREE) {
            memset(&objects[i], 0, sizeof objects[i]);
            objects[i].kind = kind;
            objects[i].session = session;
            return &objects[i];
        }
    }
    return NULL;
}

static struct object *find(void *handle, enum kind kind, struct object *session) {
    for (int i = 0; i < MAX_OBJECTS; i++) {
        if ((void *)&objects[i] == handle && objects[i].kind == kind &&
            (session == NULL || objects[i].session == session))
            return &objects[i];
    }
    return NULL;
}

static int guid_is(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof *a) == 0; }

static const char *preset_name(GUID g) {
    if (guid_is(&g, &NV_ENC_PRESET_P1_GUID)) return "P1";
    if (guid_is(&g, &NV_ENC_PRESET_P2_GUID)) return "P2";
    if (guid_is(&g, &NV_ENC_PRESET_P3_GUID)) return "P3";
    if (guid_is(&g, &NV_ENC_PRESET_P4_GUID)) return "P4";
    if (guid_is(&g, &NV_ENC_PRESET_P5_GUID)) return "P5";
    if (guid_is(&g, &NV_ENC_PRESET_P6_GUID)) return "P6";
    if (guid_is(&g, &NV_ENC_PRESET_P7_GUID)) return "P7";
    return NULL;
}

/* ---- what the tests call ---- */

void fake_nvenc_reset(uint32_t max_supported_version, int h264) {
    memset(objects, 0, sizeof objects);
    log_len = 0;
    log_text[0] = 0;
    max_version = max_supported_version;
    offers_h264 = h264;
    fail_call[0] = 0;
    last_error[0] = 0;
}

const char *fake_nvenc_log(void) { return log_text; }

void fake_nvenc_fail(const char *call, NVENCSTATUS status) {
    snprintf(fail_call, sizeof fail_call, "%s", call);
    fail_status = status;
}

/* Objects still alive: sessions, registered resources, buffers. */
int fake_nvenc_live(void) {
    int n = 0;
    for (int i = 0; i < MAX_OBJECTS; i++)
        n += objects[i].kind != FREE;
    return n;
}

/* ---- the API ---- */

static NVENCSTATUS NVENCAPI open_session_ex(NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS *p, void **encoder) {
    const char *call = "nvEncOpenEncodeSessionEx";
    ENTER(call);
    if (!p || !encoder) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null pointer");
    if (p->version != NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER)
        return refuse(NV_ENC_ERR_INVALID_VERSION, call, "structure version");
    if (p->apiVersion != NVENCAPI_VERSION) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "apiVersion");
    if (p->deviceType != NV_ENC_DEVICE_TYPE_CUDA) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "device type");
    if (!p->device) return refuse(NV_ENC_ERR_INVALID_DEVICE, call, "no CUDA context");
    struct object *s = new_object(SESSION, NULL);
    if (!s) return refuse(NV_ENC_ERR_OUT_OF_MEMORY, call, "too many objects");
    *encoder = s;
    say("%s cuda", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI guid_count(void *encoder, uint32_t *count) {
    const char *call = "nvEncGetEncodeGUIDCount";
    ENTER(call);
    FIND_SESSION(s);
    (void)s;
    if (!count) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null count");
    *count = offers_h264 ? 2 : 1;
    say("%s %u", call, *count);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI guids(void *encoder, GUID *out, uint32_t size, uint32_t *count) {
    const char *call = "nvEncGetEncodeGUIDs";
    ENTER(call);
    FIND_SESSION(s);
    (void)s;
    uint32_t have = offers_h264 ? 2 : 1;
    if (!out || !count) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null pointer");
    if (size < have) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "array too small");
    out[0] = NV_ENC_CODEC_HEVC_GUID;
    if (offers_h264) out[1] = NV_ENC_CODEC_H264_GUID;
    *count = have;
    say("%s %u", call, have);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI preset_config_ex(void *encoder, GUID codec, GUID preset, NV_ENC_TUNING_INFO tuning,
                                             NV_ENC_PRESET_CONFIG *config) {
    const char *call = "nvEncGetEncodePresetConfigEx";
    ENTER(call);
    FIND_SESSION(s);
    (void)s;
    if (!config) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null config");
    if (config->version != NV_ENC_PRESET_CONFIG_VER)
        return refuse(NV_ENC_ERR_INVALID_VERSION, call, "preset config version");
    if (config->presetCfg.version != NV_ENC_CONFIG_VER)
        return refuse(NV_ENC_ERR_INVALID_VERSION, call, "config version");
    if (!guid_is(&codec, &NV_ENC_CODEC_H264_GUID)) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "codec");
    const char *name = preset_name(preset);
    if (!name) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "preset");
    /* What a driver's preset looks like: a finite GOP, VBR, the main profile. */
    memset(&config->presetCfg, 0, sizeof config->presetCfg);
    config->presetCfg.version = NV_ENC_CONFIG_VER;
    config->presetCfg.profileGUID = NV_ENC_H264_PROFILE_MAIN_GUID;
    config->presetCfg.gopLength = 250;
    config->presetCfg.frameIntervalP = 1;
    config->presetCfg.rcParams.version = NV_ENC_RC_PARAMS_VER;
    config->presetCfg.rcParams.rateControlMode = NV_ENC_PARAMS_RC_VBR;
    config->presetCfg.encodeCodecConfig.h264Config.idrPeriod = 250;
    config->presetCfg.encodeCodecConfig.h264Config.sliceMode = 3;
    config->presetCfg.encodeCodecConfig.h264Config.sliceModeData = 4;
    say("%s h264 %s tuning=%d", call, name, (int)tuning);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI initialize(void *encoder, NV_ENC_INITIALIZE_PARAMS *p) {
    const char *call = "nvEncInitializeEncoder";
    ENTER(call);
    FIND_SESSION(s);
    if (!p || !p->encodeConfig) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null pointer");
    if (p->version != NV_ENC_INITIALIZE_PARAMS_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "params version");
    NV_ENC_CONFIG *c = p->encodeConfig;
    if (c->version != NV_ENC_CONFIG_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "config version");
    if (c->rcParams.version != NV_ENC_RC_PARAMS_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "rc version");
    if (!guid_is(&p->encodeGUID, &NV_ENC_CODEC_H264_GUID)) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "codec");
    const char *preset = preset_name(p->presetGUID);
    if (!preset) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "preset");
    if (!p->encodeWidth || !p->encodeHeight || !p->frameRateNum || !p->frameRateDen)
        return refuse(NV_ENC_ERR_INVALID_PARAM, call, "size or frame rate");
    if (s->initialized) return refuse(NV_ENC_ERR_INVALID_CALL, call, "initialised twice");
    NV_ENC_CONFIG_H264 *h = &c->encodeCodecConfig.h264Config;
    NV_ENC_CONFIG_H264_VUI_PARAMETERS *vui = &h->h264VUIParameters;
    const char *profile = guid_is(&c->profileGUID, &NV_ENC_H264_PROFILE_BASELINE_GUID) ? "baseline" : "other";
    say("%s %ux%u dar=%ux%u max=%ux%u fps=%u/%u %s tuning=%d ptd=%u async=%u profile=%s gop=%u "
        "idr=%u p=%d rc=%d avg=%u max=%u vbv=%u delay=%u zeroreorder=%u repeatspspps=%u "
        "slice=%u/%u vui=%u/%u/%u/%u/%u/%u",
        call, p->encodeWidth, p->encodeHeight, p->darWidth, p->darHeight, p->maxEncodeWidth,
        p->maxEncodeHeight, p->frameRateNum, p->frameRateDen, preset, (int)p->tuningInfo,
        p->enablePTD, p->enableEncodeAsync, profile, c->gopLength, h->idrPeriod, c->frameIntervalP,
        (int)c->rcParams.rateControlMode, c->rcParams.averageBitRate, c->rcParams.maxBitRate,
        c->rcParams.vbvBufferSize, c->rcParams.vbvInitialDelay, c->rcParams.zeroReorderDelay,
        h->repeatSPSPPS, h->sliceMode, h->sliceModeData, vui->videoSignalTypePresentFlag,
        vui->videoFullRangeFlag, vui->colourDescriptionPresentFlag, (unsigned)vui->colourPrimaries,
        (unsigned)vui->transferCharacteristics, (unsigned)vui->colourMatrix);
    s->initialized = 1;
    s->width_init = p->encodeWidth;
    s->height_init = p->encodeHeight;
    s->init = *p;
    s->init.encodeConfig = NULL;
    s->config = *c;
    return NV_ENC_SUCCESS;
}

/*
 * What nvEncReconfigureEncoder may not change (GOP structure, sync mode, PTD, the largest size)
 * and what playpod never means to change when it only sets a new rate. The rate itself may
 * change freely; the rate control mode may not.
 */
static const char *reconfigure_changes(const struct object *s, const NV_ENC_INITIALIZE_PARAMS *p) {
    const NV_ENC_INITIALIZE_PARAMS *i = &s->init;
    const NV_ENC_CONFIG *c = p->encodeConfig, *was = &s->config;
    const NV_ENC_CONFIG_H264 *h = &c->encodeCodecConfig.h264Config, *hw = &was->encodeCodecConfig.h264Config;
    if (!guid_is(&p->encodeGUID, &i->encodeGUID)) return "codec";
    if (!guid_is(&p->presetGUID, &i->presetGUID) || p->tuningInfo != i->tuningInfo) return "preset";
    if (p->encodeWidth != i->encodeWidth || p->encodeHeight != i->encodeHeight || p->darWidth != i->darWidth ||
        p->darHeight != i->darHeight)
        return "size";
    if (p->maxEncodeWidth != i->maxEncodeWidth || p->maxEncodeHeight != i->maxEncodeHeight) return "largest size";
    if (p->frameRateNum != i->frameRateNum || p->frameRateDen != i->frameRateDen) return "frame rate";
    if (p->enablePTD != i->enablePTD) return "picture type decision";
    if (p->enableEncodeAsync != i->enableEncodeAsync) return "sync mode";
    if (c->gopLength != was->gopLength || c->frameIntervalP != was->frameIntervalP || h->idrPeriod != hw->idrPeriod)
        return "GOP structure";
    if (!guid_is(&c->profileGUID, &was->profileGUID)) return "profile";
    if (c->rcParams.rateControlMode != was->rcParams.rateControlMode) return "rate control mode";
    if (c->rcParams.zeroReorderDelay != was->rcParams.zeroReorderDelay || h->repeatSPSPPS != hw->repeatSPSPPS ||
        h->sliceMode != hw->sliceMode || h->sliceModeData != hw->sliceModeData)
        return "stream structure";
    if (memcmp(&h->h264VUIParameters, &hw->h264VUIParameters, sizeof h->h264VUIParameters) != 0) return "VUI";
    return NULL;
}

static NVENCSTATUS NVENCAPI reconfigure(void *encoder, NV_ENC_RECONFIGURE_PARAMS *p) {
    const char *call = "nvEncReconfigureEncoder";
    ENTER(call);
    FIND_SESSION(s);
    CHECK_PARAMS(p, NV_ENC_RECONFIGURE_PARAMS_VER);
    if (!s->initialized) return refuse(NV_ENC_ERR_INVALID_CALL, call, "not initialised");
    NV_ENC_INITIALIZE_PARAMS *ip = &p->reInitEncodeParams;
    if (ip->version != NV_ENC_INITIALIZE_PARAMS_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "params version");
    /* A null config keeps the old one, rate included: not what a rate change wants. */
    if (!ip->encodeConfig) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null config");
    NV_ENC_CONFIG *c = ip->encodeConfig;
    if (c->version != NV_ENC_CONFIG_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "config version");
    if (c->rcParams.version != NV_ENC_RC_PARAMS_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "rc version");
    const char *changed = reconfigure_changes(s, ip);
    if (changed) return refuse(NV_ENC_ERR_UNSUPPORTED_PARAM, call, changed);
    if (!c->rcParams.averageBitRate) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "bitrate 0");
    for (int i = 0; i < MAX_OBJECTS; i++)
        if (objects[i].session == s && objects[i].kind == RESOURCE && objects[i].mapped)
            return refuse(NV_ENC_ERR_INVALID_CALL, call, "an input is mapped");
    s->config = *c;
    say("%s avg=%u max=%u vbv=%u delay=%u reset=%u idr=%u", call, c->rcParams.averageBitRate,
        c->rcParams.maxBitRate, c->rcParams.vbvBufferSize, c->rcParams.vbvInitialDelay, p->resetEncoder,
        p->forceIDR);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI register_resource(void *encoder, NV_ENC_REGISTER_RESOURCE *p) {
    const char *call = "nvEncRegisterResource";
    ENTER(call);
    FIND_SESSION(s);
    if (!s->initialized) return refuse(NV_ENC_ERR_ENCODER_NOT_INITIALIZED, call, "not initialised");
    CHECK_PARAMS(p, NV_ENC_REGISTER_RESOURCE_VER);
    if (p->resourceType != NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR)
        return refuse(NV_ENC_ERR_INVALID_PARAM, call, "resource type");
    if (p->bufferFormat != NV_ENC_BUFFER_FORMAT_NV12) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "format");
    if (p->bufferUsage != NV_ENC_INPUT_IMAGE) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "usage");
    if (!p->resourceToRegister) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null resource");
    if (p->pitch % 4 || p->pitch < p->width) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "pitch");
    if (p->width != s->width_init || p->height != s->height_init)
        return refuse(NV_ENC_ERR_INVALID_PARAM, call, "size differs from the session's");
    struct object *r = new_object(RESOURCE, s);
    if (!r) return refuse(NV_ENC_ERR_OUT_OF_MEMORY, call, "too many objects");
    r->address = (uint64_t)(uintptr_t)p->resourceToRegister;
    r->width = p->width;
    r->height = p->height;
    r->pitch = p->pitch;
    p->registeredResource = r;
    say("%s %ux%u pitch=%u address=%#llx", call, p->width, p->height, p->pitch,
        (unsigned long long)r->address);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI unregister_resource(void *encoder, NV_ENC_REGISTERED_PTR resource) {
    const char *call = "nvEncUnregisterResource";
    ENTER(call);
    FIND_SESSION(s);
    struct object *r = find(resource, RESOURCE, s);
    if (!r) return refuse(NV_ENC_ERR_RESOURCE_NOT_REGISTERED, call, "not registered on this session");
    if (r->mapped) return refuse(NV_ENC_ERR_INVALID_CALL, call, "still mapped");
    r->kind = FREE;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI create_bitstream(void *encoder, NV_ENC_CREATE_BITSTREAM_BUFFER *p) {
    const char *call = "nvEncCreateBitstreamBuffer";
    ENTER(call);
    FIND_SESSION(s);
    if (!s->initialized) return refuse(NV_ENC_ERR_ENCODER_NOT_INITIALIZED, call, "not initialised");
    CHECK_PARAMS(p, NV_ENC_CREATE_BITSTREAM_BUFFER_VER);
    struct object *b = new_object(BUFFER, s);
    if (!b) return refuse(NV_ENC_ERR_OUT_OF_MEMORY, call, "too many objects");
    p->bitstreamBuffer = b;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI destroy_bitstream(void *encoder, NV_ENC_OUTPUT_PTR buffer) {
    const char *call = "nvEncDestroyBitstreamBuffer";
    ENTER(call);
    FIND_SESSION(s);
    struct object *b = find(buffer, BUFFER, s);
    if (!b) return refuse(NV_ENC_ERR_INVALID_PTR, call, "no such buffer on this session");
    if (b->locked) return refuse(NV_ENC_ERR_INVALID_CALL, call, "still locked");
    b->kind = FREE;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI map_input(void *encoder, NV_ENC_MAP_INPUT_RESOURCE *p) {
    const char *call = "nvEncMapInputResource";
    ENTER(call);
    FIND_SESSION(s);
    CHECK_PARAMS(p, NV_ENC_MAP_INPUT_RESOURCE_VER);
    struct object *r = find(p->registeredResource, RESOURCE, s);
    if (!r) return refuse(NV_ENC_ERR_RESOURCE_NOT_REGISTERED, call, "not registered on this session");
    if (r->mapped) return refuse(NV_ENC_ERR_MAP_FAILED, call, "already mapped");
    r->mapped = 1;
    p->mappedResource = r;
    p->mappedBufferFmt = NV_ENC_BUFFER_FORMAT_NV12;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI unmap_input(void *encoder, NV_ENC_INPUT_PTR mapped) {
    const char *call = "nvEncUnmapInputResource";
    ENTER(call);
    FIND_SESSION(s);
    struct object *r = find(mapped, RESOURCE, s);
    if (!r || !r->mapped) return refuse(NV_ENC_ERR_RESOURCE_NOT_MAPPED, call, "not mapped");
    r->mapped = 0;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

/* Start codes and NAL headers of an access unit; the payloads are placeholders. */
static uint32_t put_nal(uint8_t *at, uint8_t header) {
    static const uint8_t start[4] = {0, 0, 0, 1};
    memcpy(at, start, 4);
    at[4] = header;
    at[5] = 0x80;
    return 6;
}

static NVENCSTATUS NVENCAPI encode_picture(void *encoder, NV_ENC_PIC_PARAMS *p) {
    const char *call = "nvEncEncodePicture";
    ENTER(call);
    FIND_SESSION(s);
    CHECK_PARAMS(p, NV_ENC_PIC_PARAMS_VER);
    struct object *r = find(p->inputBuffer, RESOURCE, s);
    if (!r || !r->mapped) return refuse(NV_ENC_ERR_RESOURCE_NOT_MAPPED, call, "input not mapped");
    struct object *b = find(p->outputBitstream, BUFFER, s);
    if (!b) return refuse(NV_ENC_ERR_INVALID_PTR, call, "no such output buffer");
    if (b->locked) return refuse(NV_ENC_ERR_LOCK_BUSY, call, "output still locked");
    if (p->inputWidth != r->width || p->inputHeight != r->height || p->inputPitch != r->pitch)
        return refuse(NV_ENC_ERR_INVALID_PARAM, call, "size or pitch differs from the registration");
    if (p->bufferFmt != NV_ENC_BUFFER_FORMAT_NV12) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "format");
    if (p->pictureStruct != NV_ENC_PIC_STRUCT_FRAME) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "structure");
    int idr = (p->encodePicFlags & NV_ENC_PIC_FLAG_FORCEIDR) != 0;
    int headers = (p->encodePicFlags & NV_ENC_PIC_FLAG_OUTPUT_SPSPPS) != 0;
    b->len = 0;
    if (headers) {
        b->len += put_nal(b->data + b->len, 0x67);
        b->len += put_nal(b->data + b->len, 0x68);
    }
    b->len += put_nal(b->data + b->len, idr ? 0x65 : 0x41);
    b->idr = idr;
    say("%s ts=%llu idr=%d spspps=%d", call, (unsigned long long)p->inputTimeStamp, idr, headers);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI lock_bitstream(void *encoder, NV_ENC_LOCK_BITSTREAM *p) {
    const char *call = "nvEncLockBitstream";
    ENTER(call);
    FIND_SESSION(s);
    CHECK_PARAMS(p, NV_ENC_LOCK_BITSTREAM_VER);
    struct object *b = find(p->outputBitstream, BUFFER, s);
    if (!b) return refuse(NV_ENC_ERR_INVALID_PTR, call, "no such output buffer");
    if (b->locked) return refuse(NV_ENC_ERR_LOCK_BUSY, call, "already locked");
    if (p->doNotWait) return refuse(NV_ENC_ERR_INVALID_PARAM, call, "doNotWait in synchronous mode");
    b->locked = 1;
    p->bitstreamBufferPtr = b->data;
    p->bitstreamSizeInBytes = b->len;
    p->pictureType = b->idr ? NV_ENC_PIC_TYPE_IDR : NV_ENC_PIC_TYPE_P;
    say("%s %u bytes", call, b->len);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI unlock_bitstream(void *encoder, NV_ENC_OUTPUT_PTR buffer) {
    const char *call = "nvEncUnlockBitstream";
    ENTER(call);
    FIND_SESSION(s);
    struct object *b = find(buffer, BUFFER, s);
    if (!b || !b->locked) return refuse(NV_ENC_ERR_INVALID_CALL, call, "not locked");
    b->locked = 0;
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static NVENCSTATUS NVENCAPI destroy_encoder(void *encoder) {
    const char *call = "nvEncDestroyEncoder";
    ENTER(call);
    FIND_SESSION(s);
    int left = 0;
    for (int i = 0; i < MAX_OBJECTS; i++)
        left += objects[i].kind != FREE && objects[i].session == s;
    s->kind = FREE;
    if (left) {
        /* A driver frees them with the session; a caller that relies on it has lost track. */
        for (int i = 0; i < MAX_OBJECTS; i++)
            if (objects[i].session == s) objects[i].kind = FREE;
        say("%s LEAKED %d", call, left);
        return NV_ENC_SUCCESS;
    }
    say("%s", call);
    return NV_ENC_SUCCESS;
}

static const char *NVENCAPI last_error_string(void *encoder) {
    (void)encoder;
    return last_error;
}

NVENCSTATUS NVENCAPI NvEncodeAPIGetMaxSupportedVersion(uint32_t *version) {
    if (!version) return NV_ENC_ERR_INVALID_PTR;
    *version = max_version;
    say("NvEncodeAPIGetMaxSupportedVersion %u.%u", max_version >> 4, max_version & 0xf);
    return NV_ENC_SUCCESS;
}

NVENCSTATUS NVENCAPI NvEncodeAPICreateInstance(NV_ENCODE_API_FUNCTION_LIST *list) {
    const char *call = "NvEncodeAPICreateInstance";
    ENTER(call);
    if (!list) return refuse(NV_ENC_ERR_INVALID_PTR, call, "null list");
    if (list->version != NV_ENCODE_API_FUNCTION_LIST_VER) return refuse(NV_ENC_ERR_INVALID_VERSION, call, "version");
    list->nvEncOpenEncodeSessionEx = open_session_ex;
    list->nvEncGetEncodeGUIDCount = guid_count;
    list->nvEncGetEncodeGUIDs = guids;
    list->nvEncGetEncodePresetConfigEx = preset_config_ex;
    list->nvEncInitializeEncoder = initialize;
    list->nvEncReconfigureEncoder = reconfigure;
    list->nvEncRegisterResource = register_resource;
    list->nvEncUnregisterResource = unregister_resource;
    list->nvEncCreateBitstreamBuffer = create_bitstream;
    list->nvEncDestroyBitstreamBuffer = destroy_bitstream;
    list->nvEncMapInputResource = map_input;
    list->nvEncUnmapInputResource = unmap_input;
    list->nvEncEncodePicture = encode_picture;
    list->nvEncLockBitstream = lock_bitstream;
    list->nvEncUnlockBitstream = unlock_bitstream;
    list->nvEncDestroyEncoder = destroy_encoder;
    list->nvEncGetLastErrorString = last_error_string;
    say("%s", call);
    return NV_ENC_SUCCESS;
}
