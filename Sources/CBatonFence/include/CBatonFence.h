#ifndef CBATONFENCE_H
#define CBATONFENCE_H

#include <stddef.h>
#include <sys/types.h>

/* The processes of one PostgreSQL data directory, found in /proc by what they are — the `postgres`
 * binary of the configured installation, working in that data directory — and not by parentage:
 * PostgreSQL's children each lead a process group of their own and can outlive a killed postmaster for
 * a moment, still able to commit. A zombie is not counted: it can no longer do anything.
 * C library only: the watchdog (a small process without the Swift runtime) and the monitor share it. */

#define BATON_FENCE_PATH_MAX 4096

/* `path` resolved (symbolic links followed) into `out`; kept as given when it does not resolve.
 * `data_directory` and `executable` (`<bindir>/postgres`) below are resolved paths. */
void baton_fence_resolve(const char *path, char *out, size_t size);

/* A process's state letter (R, S, D, T, Z…), or 0 when it does not exist. */
char baton_fence_state(pid_t pid);

/* Whether `pid` is a live process of the data directory. */
int baton_fence_belongs(const char *data_directory, const char *executable, pid_t pid);

/* The postmaster's PID, or 0: the first line of postmaster.pid when it names a live process of the data
 * directory (a stale file or a recycled PID does not), else — while it starts and has not written that
 * file yet — the process of the data directory that has not renamed itself (children show as
 * `postgres: …`; the postmaster keeps its command line). */
pid_t baton_fence_postmaster(const char *data_directory, const char *executable);

/* Every live process of the data directory, the postmaster first when it runs. Writes at most
 * `capacity` PIDs and returns how many there are (which may be more than `capacity`). */
size_t baton_fence_running(const char *data_directory, const char *executable, pid_t *pids, size_t capacity);

/* SIGKILL of every process of the data directory — the postmaster first, so that it cannot start more —
 * looking again every 10 ms until none is left or `timeout_ms` passed. Returns how many are still
 * alive (0: fencing verified), their PIDs in `left` (at most `capacity`). */
size_t baton_fence_kill_all(const char *data_directory, const char *executable, int timeout_ms, pid_t *left, size_t capacity);

/* The nice value the monitor and its watchdog run at: before the database they guard, so that its
 * lease is renewed under load and the fence comes on time (what they start runs at the default). */
#define BATON_DAEMON_NICE -10

#endif
