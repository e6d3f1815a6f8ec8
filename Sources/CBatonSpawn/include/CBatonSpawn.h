#ifndef BATON_CBATONSPAWN_H
#define BATON_CBATONSPAWN_H
#include <sys/types.h>

/// Starts `path` with `argv` and `envp` (NULL-terminated), stdin from `stdin_fd`, stdout and stderr to
/// `output_fd`, and every other descriptor closed, so that a daemon it starts inherits nothing of
/// ours. Returns the child's pid, or -errno.
pid_t baton_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int output_fd);

/// Sets the effective user ID of the calling thread only (the raw system call: glibc's seteuid changes
/// every thread). A Unix-socket connection made meanwhile carries that ID as its peer credentials.
/// Returns 0 or -errno.
int baton_thread_set_euid(uid_t euid);
#endif
