#define _GNU_SOURCE
#include "CBatonFence.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void baton_fence_resolve(const char *path, char *out, size_t size) {
    char *real = realpath(path, NULL);
    snprintf(out, size, "%s", real ? real : path);
    free(real);
}

/* The start of a small file (procfs, a PID file), NUL-terminated; -1 when it cannot be read. */
static ssize_t read_small(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t total = 0;
    while (total + 1 < size) {
        ssize_t n = read(fd, buffer + total, size - 1 - total);
        if (n <= 0) break;
        total += (size_t)n;
    }
    close(fd);
    buffer[total] = 0;
    return (ssize_t)total;
}

char baton_fence_state(pid_t pid) {
    char path[64], stat[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, stat, sizeof stat) <= 0) return 0;
    char *close_paren = strrchr(stat, ')');
    if (!close_paren) return 0;
    char *p = close_paren + 1;
    while (*p == ' ') p++;
    return *p;
}

/* readlink of a /proc link, NUL-terminated; 0 on failure. */
static int link_target(const char *path, char *out, size_t size) {
    ssize_t n = readlink(path, out, size - 1);
    if (n <= 0) return 0;
    out[n] = 0;
    return 1;
}

int baton_fence_belongs(const char *data_directory, const char *executable, pid_t pid) {
    char state = baton_fence_state(pid);
    if (state == 0 || state == 'Z' || state == 'X') return 0;
    char path[64], seen[BATON_FENCE_PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)pid);
    if (!link_target(path, seen, sizeof seen) || strcmp(seen, data_directory) != 0) return 0;
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    if (!link_target(path, seen, sizeof seen)) return 0;
    /* A package upgrade under a running server: the kernel adds " (deleted)" to the replaced file. */
    size_t length = strlen(seen);
    const char *deleted = " (deleted)";
    if (length > strlen(deleted) && strcmp(seen + length - strlen(deleted), deleted) == 0) seen[length - strlen(deleted)] = 0;
    return strcmp(seen, executable) == 0;
}

/* Every live process of the data directory in /proc order. */
static size_t scan(const char *data_directory, const char *executable, pid_t *pids, size_t capacity) {
    DIR *directory = opendir("/proc");
    if (!directory) return 0;
    size_t count = 0;
    pid_t self = getpid();
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != 0 || pid <= 0 || pid == self || !baton_fence_belongs(data_directory, executable, (pid_t)pid)) continue;
        if (count < capacity) pids[count] = (pid_t)pid;
        count++;
    }
    closedir(directory);
    return count;
}

pid_t baton_fence_postmaster(const char *data_directory, const char *executable) {
    char path[BATON_FENCE_PATH_MAX + 32], text[64];
    snprintf(path, sizeof path, "%s/postmaster.pid", data_directory);
    if (read_small(path, text, sizeof text) > 0) {
        long pid = strtol(text, NULL, 10);
        if (pid > 0 && baton_fence_belongs(data_directory, executable, (pid_t)pid)) return (pid_t)pid;
    }
    pid_t pids[256];
    size_t count = scan(data_directory, executable, pids, 256);
    for (size_t i = 0; i < count && i < 256; i++) {
        char cmdline[64];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pids[i]);
        if (read_small(path, cmdline, sizeof cmdline) >= 0 && strncmp(cmdline, "postgres: ", 10) != 0) return pids[i];
    }
    return 0;
}

size_t baton_fence_running(const char *data_directory, const char *executable, pid_t *pids, size_t capacity) {
    size_t count = scan(data_directory, executable, pids, capacity);
    pid_t postmaster = baton_fence_postmaster(data_directory, executable);
    size_t stored = count < capacity ? count : capacity;
    for (size_t i = 1; postmaster && i < stored; i++) {
        if (pids[i] != postmaster) continue;
        memmove(pids + 1, pids, i * sizeof *pids);
        pids[0] = postmaster;
        break;
    }
    return count;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

size_t baton_fence_kill_all(const char *data_directory, const char *executable, int timeout_ms, pid_t *left, size_t capacity) {
    long long deadline = now_ms() + timeout_ms;
    pid_t alive[4096];
    for (;;) {
        size_t count = baton_fence_running(data_directory, executable, alive, 4096);
        if (count == 0 || now_ms() >= deadline) {
            size_t stored = count < capacity ? count : capacity;
            memcpy(left, alive, (stored < 4096 ? stored : 4096) * sizeof *left);
            return count;
        }
        for (size_t i = 0; i < count && i < 4096; i++) kill(alive[i], SIGKILL);
        usleep(10000);
    }
}
