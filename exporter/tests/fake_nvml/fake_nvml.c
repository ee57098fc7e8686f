/*
 * fake_nvml.c: a scripted stand-in for NVIDIA's libnvidia-ml.so.1, so that kepler-rs's real NVML path
 * (exporter/src/gpu/nvml.rs through the nvml-wrapper crate) runs end to end on machines without a GPU.
 *
 * Build:  gcc -shared -fPIC -O2 -Wall -Wextra -o DIR/libnvidia-ml.so.1 fake_nvml.c -lpthread
 *         (or scripts/fake-nvml.sh DIR), then run the exporter with LD_LIBRARY_PATH=DIR: nvml-wrapper
 *         dlopen()s the bare name "libnvidia-ml.so.1", so the dynamic loader finds this one first.
 *
 * It implements only the entry points that nvml-wrapper 0.13 calls for kepler-rs (nvml-wrapper-sys
 * resolves every symbol at load time but tolerates missing ones until they are called):
 *   nvmlInit_v2 nvmlInitWithFlags nvmlShutdown nvmlErrorString nvmlSystemGetDriverVersion
 *   nvmlDeviceGetCount_v2 nvmlDeviceGetHandleByIndex_v2 nvmlDeviceGetUUID nvmlDeviceGetName
 *   nvmlDeviceGetIndex nvmlDeviceGetTotalEnergyConsumption nvmlDeviceGetPowerUsage
 *   nvmlDeviceGetProcessUtilization nvmlDeviceGetComputeRunningProcesses_v3
 *   nvmlDeviceGetGraphicsRunningProcesses_v3 nvmlDeviceGetMigMode nvmlDeviceGetMaxMigDeviceCount
 *   nvmlDeviceGetMigDeviceHandleByIndex nvmlDeviceGetMemoryInfo_v2 nvmlDeviceGetUtilizationRates
 * Struct layouts and return codes follow nvml-wrapper-sys 0.10's bindings (nvml.h 12.x).
 *
 * Behaviour comes from the text file named by $FAKE_NVML_SCRIPT, re-read on every call (so a test can
 * change it mid-run; replace it atomically: write a temporary file and rename it). One directive per
 * line, '#' starts a comment; error names are listed in errors[] below (or a number).
 *
 *   init <error>              nvmlInit_v2 answers <error> (default: success)
 *   epoch <n>                 changing n restarts every energy counter at 0 (a driver reload)
 *   device <uuid>             starts a device; devices get NVML indices in file order
 *     name <text...>          product name (default "NVIDIA Fake GPU")
 *     watts <w>               the energy counter rises at <w> W (piecewise: a change applies from the
 *                             moment the library sees it); also the default power reading
 *     power_mw <mW>           nvmlDeviceGetPowerUsage (default: watts * 1000)
 *     gpu_util <percent>      device utilisation (default: the sum of its processes' SM %, at most 100);
 *                             nvmlDeviceGetUtilizationRates answers its time average since the previous
 *                             call, integrated like the energy counter, so each tick's utilisation and
 *                             energy cover the same span ("error" instead of a number: not_supported)
 *     energy <error>          nvmlDeviceGetTotalEnergyConsumption answers <error> (e.g. not_supported)
 *     util <error>            nvmlDeviceGetProcessUtilization answers <error>
 *     procs <error>           the running-process calls answer <error>
 *     handle <error>          nvmlDeviceGetHandleByIndex_v2 answers <error>
 *     fail <error>            every other per-device call answers <error> (e.g. gpu_lost, unknown)
 *     process <pid> <sm%> [mig=<i>]   a compute process and its SM utilisation (in MIG instance i)
 *     graphics <pid>          a process with a graphics context
 *     mig <uuid> <MiB>        MIG mode on; one MIG device (instance) of that memory size
 *
 * Utilisation: like the driver, one sample per process with non-zero SM utilisation, stamped with the
 * time (wall clock, microseconds) of the driver's latest sample period (1/6 s) and returned only when
 * newer than lastSeenTimeStamp. NVML_ERROR_NOT_FOUND when there is none.
 *
 * If $FAKE_NVML_LOG names a file, every call appends "<function> <return code>" to it.
 *
 * What it cannot show: anything about the real driver (its timing, its sampling, its quirks on a given
 * GPU and driver version) or real power numbers. See docs/gpu.md, "Testing without a GPU".
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

typedef int nvmlReturn_t;
typedef struct fake_handle *nvmlDevice_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

/* nvml.h: nvmlProcessInfo_t (= nvmlProcessInfo_v2_t) */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

/* nvml.h: nvmlProcessUtilizationSample_t */
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

/* nvml.h: nvmlMemory_v2_t */
typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

#define NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
#define NVML_DEVICE_MIG_ENABLE 1u
#define NVML_DEVICE_MIG_DISABLE 0u

#define MAX_DEVICES 16
#define MAX_MIG 7
#define MAX_PROCS 64
#define TEXT 96
#define SAMPLE_PERIOD_US 166667ULL

static const struct {
    const char *name;
    int code;
} errors[] = {
    {"success", NVML_SUCCESS},
    {"none", NVML_SUCCESS},
    {"uninitialized", NVML_ERROR_UNINITIALIZED},
    {"invalid_argument", NVML_ERROR_INVALID_ARGUMENT},
    {"not_supported", NVML_ERROR_NOT_SUPPORTED},
    {"no_permission", NVML_ERROR_NO_PERMISSION},
    {"not_found", NVML_ERROR_NOT_FOUND},
    {"driver_not_loaded", NVML_ERROR_DRIVER_NOT_LOADED},
    {"timeout", NVML_ERROR_TIMEOUT},
    {"gpu_lost", NVML_ERROR_GPU_IS_LOST},
    {"reset_required", NVML_ERROR_RESET_REQUIRED},
    {"unknown", NVML_ERROR_UNKNOWN},
};

struct process {
    unsigned int pid;
    unsigned int sm;
    int mig; /* -1: none */
    int graphics;
};

struct mig {
    char uuid[TEXT];
    unsigned long long mib;
};

struct device {
    char uuid[TEXT];
    char name[TEXT];
    double watts;
    long long power_mw; /* -1: watts * 1000 */
    double gpu_util;    /* percent; < 0: the sum of the processes' SM % */
    int gpu_util_err;
    int energy_err, util_err, procs_err, handle_err, fail_err;
    struct process procs[MAX_PROCS];
    int nprocs;
    struct mig mig[MAX_MIG];
    int nmig;
};

struct script {
    int init_err;
    long long epoch;
    struct device dev[MAX_DEVICES];
    int ndev;
};

/* An nvmlDevice_t points at one of these: a physical GPU (mig = -1) or one of its MIG devices. */
struct fake_handle {
    int dev;
    int mig;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct script S;         /* the script as last read */
static int init_count;          /* nvmlInit minus nvmlShutdown */
static int clock_started;
static struct timespec last_advance;
static double energy_mj[MAX_DEVICES];
static double util_integral[MAX_DEVICES]; /* percent x seconds, and seconds, since start */
static double util_seconds[MAX_DEVICES];
static double util_mark[MAX_DEVICES][2]; /* both at the previous nvmlDeviceGetUtilizationRates */
static long long energy_epoch;
static unsigned long long t0_us; /* wall-clock start of the sample periods */
static struct fake_handle handles[MAX_DEVICES][MAX_MIG + 1];

static void log_call(const char *fn, int rc) {
    const char *path = getenv("FAKE_NVML_LOG");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "%s %d\n", fn, rc);
    fclose(f);
}

static int parse_error(const char *s) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (strcmp(s, errors[i].name) == 0)
            return errors[i].code;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end)
        return (int)v;
    return NVML_ERROR_UNKNOWN;
}

static void copy_text(char *dst, const char *src) {
    snprintf(dst, TEXT, "%s", src);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        *--e = 0;
    return s;
}

/* Read $FAKE_NVML_SCRIPT into S. Returns 0, or an NVML error when it cannot be read. */
static int read_script(void) {
    const char *path = getenv("FAKE_NVML_SCRIPT");
    if (!path || !*path)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? NVML_ERROR_DRIVER_NOT_LOADED : NVML_ERROR_UNKNOWN;
    static struct script s;
    memset(&s, 0, sizeof s);
    char line[512];
    struct device *d = NULL;
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *l = trim(line);
        if (!*l)
            continue;
        char *arg = l + strcspn(l, " \t");
        if (*arg)
            *arg++ = 0;
        arg = trim(arg);
        if (strcmp(l, "init") == 0) {
            s.init_err = parse_error(arg);
        } else if (strcmp(l, "epoch") == 0) {
            s.epoch = atoll(arg);
        } else if (strcmp(l, "device") == 0) {
            if (s.ndev == MAX_DEVICES) {
                d = NULL;
                continue;
            }
            d = &s.dev[s.ndev++];
            copy_text(d->uuid, arg);
            copy_text(d->name, "NVIDIA Fake GPU");
            d->power_mw = -1;
            d->gpu_util = -1;
        } else if (!d) {
            continue; /* a device directive before any device */
        } else if (strcmp(l, "name") == 0) {
            copy_text(d->name, arg);
        } else if (strcmp(l, "watts") == 0) {
            d->watts = atof(arg);
        } else if (strcmp(l, "power_mw") == 0) {
            d->power_mw = atoll(arg);
        } else if (strcmp(l, "gpu_util") == 0) {
            char *end;
            double v = strtod(arg, &end);
            if (*arg && !*end)
                d->gpu_util = v < 0 ? 0 : (v > 100 ? 100 : v);
            else
                d->gpu_util_err = parse_error(arg);
        } else if (strcmp(l, "energy") == 0) {
            d->energy_err = parse_error(arg);
        } else if (strcmp(l, "util") == 0) {
            d->util_err = parse_error(arg);
        } else if (strcmp(l, "procs") == 0) {
            d->procs_err = parse_error(arg);
        } else if (strcmp(l, "handle") == 0) {
            d->handle_err = parse_error(arg);
        } else if (strcmp(l, "fail") == 0) {
            d->fail_err = parse_error(arg);
        } else if ((strcmp(l, "process") == 0 || strcmp(l, "graphics") == 0) && d->nprocs < MAX_PROCS) {
            struct process *p = &d->procs[d->nprocs];
            int mig = -1;
            unsigned int pid = 0, sm = 0;
            const char *m = strstr(arg, "mig=");
            if (m)
                mig = atoi(m + 4);
            if (sscanf(arg, "%u %u", &pid, &sm) < 1)
                continue;
            p->pid = pid;
            p->graphics = strcmp(l, "graphics") == 0;
            p->sm = p->graphics ? 0 : (sm > 100 ? 100 : sm);
            p->mig = mig;
            d->nprocs++;
        } else if (strcmp(l, "mig") == 0 && d->nmig < MAX_MIG) {
            struct mig *m = &d->mig[d->nmig];
            char uuid[TEXT];
            unsigned long long mib = 0;
            if (sscanf(arg, "%95s %llu", uuid, &mib) == 2) {
                copy_text(m->uuid, uuid);
                m->mib = mib;
                d->nmig++;
            }
        }
    }
    fclose(f);
    S = s;
    return 0;
}

static unsigned long long wall_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
}

static double device_util(const struct device *d) {
    if (d->gpu_util >= 0)
        return d->gpu_util;
    double sum = 0;
    for (int i = 0; i < d->nprocs; i++)
        sum += d->procs[i].sm;
    return sum > 100 ? 100 : sum;
}

/* Advance every energy counter to now at the script's current power. */
static void advance_energy(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!clock_started || S.epoch != energy_epoch) {
        memset(energy_mj, 0, sizeof energy_mj);
        energy_epoch = S.epoch;
        if (!clock_started)
            t0_us = wall_us();
        clock_started = 1;
        last_advance = now;
        return;
    }
    double dt = (double)(now.tv_sec - last_advance.tv_sec) + (double)(now.tv_nsec - last_advance.tv_nsec) / 1e9;
    last_advance = now;
    for (int i = 0; i < S.ndev; i++) {
        energy_mj[i] += S.dev[i].watts * dt * 1000.0;
        util_integral[i] += device_util(&S.dev[i]) * dt;
        util_seconds[i] += dt;
    }
}

/* Lock, re-read the script and advance the counters. Returns 0 or an NVML error (lock held either way). */
static int enter(void) {
    pthread_mutex_lock(&lock);
    int rc = read_script();
    if (rc == 0)
        advance_energy();
    return rc;
}

static nvmlReturn_t leave(const char *fn, nvmlReturn_t rc) {
    log_call(fn, rc);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* Lock and resolve a handle: sets *d (and *mig, -1 for a physical GPU) or returns an error. */
static int enter_device(nvmlDevice_t h, struct device **d, int *mig) {
    int rc = enter();
    if (rc)
        return rc;
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!h || h->dev < 0 || h->dev >= S.ndev)
        return NVML_ERROR_INVALID_ARGUMENT;
    *d = &S.dev[h->dev];
    if (mig)
        *mig = h->mig;
    if (h->mig >= (*d)->nmig)
        return NVML_ERROR_INVALID_ARGUMENT;
    return (*d)->fail_err;
}

static nvmlReturn_t copy_string(const char *src, char *dst, unsigned int length) {
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    int rc = enter();
    if (rc == 0)
        rc = S.init_err;
    if (rc == 0)
        init_count++;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return nvmlInit_v2();
}

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    int rc = NVML_SUCCESS;
    if (init_count <= 0)
        rc = NVML_ERROR_UNINITIALIZED;
    else
        init_count--;
    return leave(__func__, rc);
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires reset";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    int rc = enter();
    if (rc == 0)
        rc = init_count > 0 ? copy_string("550.00.fake", version, length) : NVML_ERROR_UNINITIALIZED;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    int rc = enter();
    if (rc == 0 && init_count <= 0)
        rc = NVML_ERROR_UNINITIALIZED;
    if (rc == 0 && !count)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *count = (unsigned int)S.ndev;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    int rc = enter();
    if (rc == 0 && init_count <= 0)
        rc = NVML_ERROR_UNINITIALIZED;
    if (rc == 0 && (!device || index >= (unsigned int)S.ndev))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        rc = S.dev[index].handle_err;
    if (rc == 0) {
        handles[index][0].dev = (int)index;
        handles[index][0].mig = -1;
        *device = &handles[index][0];
    }
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0)
        rc = copy_string(mig < 0 ? d->uuid : d->mig[mig].uuid, uuid, length);
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    struct device *d;
    int rc = enter_device(device, &d, NULL);
    if (rc == 0)
        rc = copy_string(d->name, name, length);
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    struct device *d;
    int rc = enter_device(device, &d, NULL);
    if (rc == 0 && !index)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *index = (unsigned int)device->dev;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && mig >= 0)
        rc = NVML_ERROR_NOT_SUPPORTED; /* power and energy exist per physical GPU only */
    if (rc == 0)
        rc = d->energy_err;
    if (rc == 0 && !energy)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *energy = (unsigned long long)energy_mj[device->dev];
    return leave(__func__, rc);
}

/* nvml.h: nvmlUtilization_t */
typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && (mig >= 0 || d->nmig > 0))
        rc = NVML_ERROR_NOT_SUPPORTED; /* not in MIG mode */
    if (rc == 0)
        rc = d->gpu_util_err;
    if (rc == 0 && !utilization)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0) {
        int i = device->dev;
        double secs = util_seconds[i] - util_mark[i][1];
        double pct = secs > 0 ? (util_integral[i] - util_mark[i][0]) / secs : device_util(d);
        util_mark[i][0] = util_integral[i];
        util_mark[i][1] = util_seconds[i];
        memset(utilization, 0, sizeof *utilization);
        utilization->gpu = (unsigned int)(pct + 0.5);
    }
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && mig >= 0)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == 0 && !power)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *power = (unsigned int)(d->power_mw >= 0 ? d->power_mw : (long long)(d->watts * 1000.0));
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *processSamplesCount, unsigned long long lastSeenTimeStamp) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && (mig >= 0 || d->nmig > 0))
        rc = NVML_ERROR_NOT_SUPPORTED; /* no per-process utilisation in MIG mode */
    if (rc == 0)
        rc = d->util_err;
    if (rc == 0 && !processSamplesCount)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc != 0)
        return leave(__func__, rc);
    unsigned long long now = wall_us();
    unsigned long long stamp = t0_us + (now - t0_us) / SAMPLE_PERIOD_US * SAMPLE_PERIOD_US;
    unsigned int n = 0;
    if (stamp > lastSeenTimeStamp)
        for (int i = 0; i < d->nprocs; i++)
            n += d->procs[i].sm > 0;
    if (n == 0)
        rc = NVML_ERROR_NOT_FOUND;
    else if (!utilization || *processSamplesCount < n)
        rc = NVML_ERROR_INSUFFICIENT_SIZE;
    else {
        unsigned int k = 0;
        for (int i = 0; i < d->nprocs; i++) {
            if (d->procs[i].sm == 0)
                continue;
            memset(&utilization[k], 0, sizeof utilization[k]);
            utilization[k].pid = d->procs[i].pid;
            utilization[k].timeStamp = stamp;
            utilization[k].smUtil = d->procs[i].sm;
            k++;
        }
    }
    *processSamplesCount = n;
    return leave(__func__, rc);
}

static nvmlReturn_t running(const char *fn, nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_t *infos,
                            int graphics) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0)
        rc = d->procs_err;
    if (rc == 0 && !infoCount)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc != 0)
        return leave(fn, rc);
    unsigned int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        unsigned int k = 0;
        for (int i = 0; i < d->nprocs; i++) {
            const struct process *p = &d->procs[i];
            /* A physical GPU in MIG mode lists every instance's processes; a MIG device its own. */
            if (p->graphics != graphics || (mig >= 0 && p->mig != mig))
                continue;
            if (pass == 1) {
                memset(&infos[k], 0, sizeof infos[k]);
                infos[k].pid = p->pid;
                infos[k].usedGpuMemory = 1ULL << 30;
                infos[k].gpuInstanceId = p->mig >= 0 ? (unsigned int)p->mig : 0xFFFFFFFFu;
                infos[k].computeInstanceId = p->mig >= 0 ? 0 : 0xFFFFFFFFu;
            }
            k++;
        }
        n = k;
        if (pass == 0 && (n == 0 || !infos || *infoCount < n))
            break;
    }
    if (n > 0 && (!infos || *infoCount < n))
        rc = NVML_ERROR_INSUFFICIENT_SIZE;
    *infoCount = n;
    return leave(fn, rc);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos) {
    return running(__func__, device, infoCount, infos, 0);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                      nvmlProcessInfo_t *infos) {
    return running(__func__, device, infoCount, infos, 1);
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && mig >= 0)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == 0 && (!currentMode || !pendingMode))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *currentMode = *pendingMode = d->nmig > 0 ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && mig >= 0)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == 0 && !count)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0)
        *count = d->nmig > 0 ? MAX_MIG : 0;
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *migDevice) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && (mig >= 0 || d->nmig == 0))
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == 0 && (!migDevice || index >= MAX_MIG))
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0 && index >= (unsigned int)d->nmig)
        rc = NVML_ERROR_NOT_FOUND; /* an unused slot */
    if (rc == 0) {
        struct fake_handle *h = &handles[device->dev][index + 1];
        h->dev = device->dev;
        h->mig = (int)index;
        *migDevice = h;
    }
    return leave(__func__, rc);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    struct device *d;
    int mig;
    int rc = enter_device(device, &d, &mig);
    if (rc == 0 && !memory)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == 0 && memory->version != NVML_MEMORY_V2_VERSION)
        rc = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (rc == 0) {
        unsigned long long mib = 0;
        if (mig >= 0)
            mib = d->mig[mig].mib;
        else
            for (int i = 0; i < d->nmig; i++)
                mib += d->mig[i].mib;
        if (mib == 0)
            mib = 81559; /* an 80 GB board */
        memory->total = mib << 20;
        memory->reserved = 0;
        memory->used = 0;
        memory->free = memory->total;
    }
    return leave(__func__, rc);
}
