/* platform_posix.c - POSIX file mapping, atomic writes, directories, clock, CPU count.
 * All platform-specific code lives in platform_*.c files. */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

nx_status nx__file_map(const char *path, nx_mapped_file *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nx__error(NX_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nx__error(NX_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return nx__error(NX_ERR_IO, "%s: not a regular file", path);
    }
    out->path = nx__strdup(path);
    if (!out->path) { close(fd); return nx__error(NX_ERR_NOMEM, "%s: out of memory", path); }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            nx__free(out->path);
            memset(out, 0, sizeof *out);
            return nx__error(NX_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    return NX_OK;
}

void nx__file_unmap(nx_mapped_file *mf) {
    if (mf->data && mf->size) munmap((void *)mf->data, mf->size);
    nx__free(mf->path);
    memset(mf, 0, sizeof *mf);
}

void nx__map_release(const void *p, size_t n) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + n) & ~(page - 1);
    if (p && e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);   /* advisory, as above */
}

void nx__advise_huge(const void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + n) & ~(huge - 1);
    if (p && e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

void nx__map_advise_huge(const void *p, size_t n, const void *map, size_t map_size) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)map, hi = ((uintptr_t)map + map_size + page - 1) & ~(page - 1);
    uintptr_t a = (uintptr_t)p & ~(huge - 1), e = ((uintptr_t)p + n + huge - 1) & ~(huge - 1);
    if (a < lo) a = lo;
    if (e > hi) e = hi;
    if (p && n && e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p, (void)n, (void)map, (void)map_size;
#endif
}

void nx__file_drop_cache(const char *path) {
#ifdef POSIX_FADV_DONTNEED
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
#else
    (void)path;
#endif
}

nx_status nx__file_read_all(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nx__error(NX_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    nx_buf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) nx__buf_append(&b, tmp, n);
    int err = ferror(f);
    fclose(f);
    if (err) { nx__buf_free(&b); return nx__error(NX_ERR_IO, "%s: read error", path); }
    if (b.oom) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "%s: out of memory", path); }
    if (!b.data) nx__buf_append(&b, "", 0);
    if (b.oom) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "%s: out of memory", path); }
    *out = b.data;
    if (len) *len = b.len;
    return NX_OK;
}

bool nx__file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool nx__dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

nx_status nx__mkdir_p(const char *path) {
    char *p = nx__strdup(path);
    if (!p) return nx__error(NX_ERR_NOMEM, "out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            nx_status st = nx__error(NX_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            nx__free(p);
            return st;
        }
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        nx_status st = nx__error(NX_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
        nx__free(p);
        return st;
    }
    nx__free(p);
    return NX_OK;
}

char *nx__path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] != '/';
    char *s = nx__malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    if (slash) s[a++] = '/';
    memcpy(s + a, name, b + 1);
    return s;
}

nx_status nx__atomic_open(nx_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    af->path = nx__strdup(path);
    char suffix[48];
    snprintf(suffix, sizeof suffix, ".tmp.%ld", (long)getpid());
    size_t n = strlen(path) + strlen(suffix) + 1;
    af->tmp_path = nx__malloc(n);
    if (!af->path || !af->tmp_path) {
        nx__atomic_abort(af);
        return nx__error(NX_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp_path, n, "%s%s", path, suffix);
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        nx_status st = nx__error(NX_ERR_IO, "%s: cannot create: %s", af->tmp_path, strerror(errno));
        nx__atomic_abort(af);
        return st;
    }
    return NX_OK;
}

nx_status nx__atomic_write(nx_atomic_file *af, const void *data, size_t n) {
    if (af->failed || !af->fp) return nx__error(NX_ERR_STATE, "%s: write after failure", af->path);
    if (n && fwrite(data, 1, n, af->fp) != n) {
        af->failed = true;
        return nx__error(NX_ERR_IO, "%s: write failed: %s", af->tmp_path, strerror(errno));
    }
    return NX_OK;
}

static void fsync_parent_dir(const char *path) {
    char *copy = nx__strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    nx__free(copy);
}

nx_status nx__atomic_commit(nx_atomic_file *af) {
    if (!af->fp || af->failed) {
        nx__atomic_abort(af);
        return nx__error(NX_ERR_STATE, "atomic commit after a failed write");
    }
    nx_status st = NX_OK;
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0)
        st = nx__error(NX_ERR_IO, "%s: flush/fsync failed: %s", af->tmp_path, strerror(errno));
    if (fclose(af->fp) != 0 && st == NX_OK)
        st = nx__error(NX_ERR_IO, "%s: close failed: %s", af->tmp_path, strerror(errno));
    af->fp = NULL;
    if (st == NX_OK && rename(af->tmp_path, af->path) != 0)
        st = nx__error(NX_ERR_IO, "%s: rename to %s failed: %s", af->tmp_path, af->path, strerror(errno));
    if (st != NX_OK) {
        nx__atomic_abort(af);
        return st;
    }
    fsync_parent_dir(af->path);
    nx__free(af->path);
    nx__free(af->tmp_path);
    memset(af, 0, sizeof *af);
    return NX_OK;
}

void nx__atomic_abort(nx_atomic_file *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    nx__free(af->path);
    nx__free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

double nx_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int nx__cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
