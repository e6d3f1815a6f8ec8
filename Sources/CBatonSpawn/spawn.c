#define _GNU_SOURCE
#include "CBatonSpawn.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

pid_t baton_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int output_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    pid_t pid = -1;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return -rc;
    posix_spawnattr_init(&attributes);
    /* A new process group, so that a signal meant for Baton is not delivered to what it started. */
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attributes, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, output_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, output_fd, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    /* The child starts at the default priority whatever this thread's (the nice value is a thread's on
     * Linux, and a child inherits its spawning thread's): the monitor raises its own so that its lease
     * is renewed under load (baton_raise_priority), not PostgreSQL's. The thread is blocked here
     * meanwhile, so nothing else runs at the lowered priority. */
    errno = 0;
    int raised = getpriority(PRIO_PROCESS, 0);
    int lowered = errno == 0 && raised < 0 && setpriority(PRIO_PROCESS, 0, 0) == 0;
    rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp);
    if (lowered) (void)setpriority(PRIO_PROCESS, 0, raised); /* ignored: failing, this thread stays at 0 */
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return rc == 0 ? pid : -rc;
}

int baton_thread_set_euid(uid_t euid) {
    long rc = syscall(SYS_setresuid, (uid_t)-1, euid, (uid_t)-1);
    return rc == 0 ? 0 : -errno;
}

int baton_raise_priority(int nice_value) {
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) return -errno;
    int failure = 0;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        if (setpriority(PRIO_PROCESS, (id_t)atoi(entry->d_name), nice_value) != 0) failure = errno;
    }
    closedir(tasks);
    return -failure;
}
