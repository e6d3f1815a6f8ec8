#define _GNU_SOURCE
#include "CBatonSpawn.h"
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>
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
    rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return rc == 0 ? pid : -rc;
}

int baton_thread_set_euid(uid_t euid) {
    long rc = syscall(SYS_setresuid, (uid_t)-1, euid, (uid_t)-1);
    return rc == 0 ? 0 : -errno;
}
