/* fs.c - folder helpers shared by export, checkpoints, the trainer, eval and the study. */
#include "safetune/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void st_fsync_dir(const char *dir) {
    int fd = open(dir && dir[0] ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    if (fsync(fd) != 0) { /* best effort (some filesystems refuse fsync on a folder) */
    }
    close(fd);
}

st_status st_mkdir_p(const char *path) {
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return st_error(ST_ERR_ARG, "bad folder path '%s'", path);
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0') continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return st_error(ST_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
        tmp[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return st_error(ST_ERR_IO, "%s: exists and is not a folder", path);
    return ST_OK;
}

void st_remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[4400];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

void st_remove_stale_temp_dirs(const char *dir, const char *prefix) {
    static const char *const tags[] = {".partial.", ".old.", ".tmp."};
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix))) continue;
        const char *pid_text = NULL;
        for (int k = 0; k < 3 && !pid_text; k++) {
            const char *t = strstr(de->d_name, tags[k]);
            if (t) pid_text = t + strlen(tags[k]);
        }
        if (!pid_text) continue;
        char *end;
        const long pid = strtol(pid_text, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        st_remove_flat_dir(p);
        unlink(p); /* a file (st_write_file_atomic's temp) */
    }
    closedir(d);
}

char *st_path_join(const char *dir, const char *name) {
    size_t la = strlen(dir), lb = strlen(name);
    while (la > 1 && dir[la - 1] == '/') la--;
    char *r = st_malloc(la + lb + 2);
    if (!r) return NULL;
    memcpy(r, dir, la);
    r[la] = '/';
    memcpy(r + la + 1, name, lb + 1);
    return r;
}
