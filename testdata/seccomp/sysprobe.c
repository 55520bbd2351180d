/* sysprobe NAME...: make one syscall per NAME and print "NAME ok" or "NAME <errno name>".
 * Built static by the seccomp tests (gcc -static), so that it runs in the busybox image. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
static const char *ename(int e) {
    switch (e) { case EPERM: return "EPERM"; case ENOSYS: return "ENOSYS"; case ENOENT: return "ENOENT";
    case EACCES: return "EACCES"; case EINVAL: return "EINVAL"; case EEXIST: return "EEXIST"; case EFAULT: return "EFAULT"; default: return strerror(e); }
}
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i]; long rc = -1;
        errno = 0;
        if (!strcmp(n, "keyctl")) rc = syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3 /*session*/, 1);
        else if (!strcmp(n, "add_key")) rc = syscall(SYS_add_key, "user", "pb", "x", 1, -3);
        else if (!strcmp(n, "unshare")) rc = syscall(SYS_unshare, CLONE_NEWUSER);
        else if (!strcmp(n, "mount")) rc = syscall(SYS_mount, "none", "/nonexistent-target", "tmpfs", 0, 0);
        else if (!strcmp(n, "clone3")) rc = syscall(SYS_clone3, NULL, 0);  /* EINVAL when it gets through */
        else if (!strcmp(n, "mkdir")) rc = syscall(SYS_mkdir, "/tmp/probe-dir", 0755);
        else if (!strcmp(n, "personality-query")) rc = syscall(SYS_personality, 0xffffffffUL);
        else if (!strcmp(n, "personality-bad")) rc = syscall(SYS_personality, 0x0400000UL /*READ_IMPLIES_EXEC*/);
        else if (!strcmp(n, "clone-newns")) {
            rc = syscall(SYS_clone, CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
            if (rc == 0) _exit(0);
            if (rc > 0) waitpid(rc, 0, 0);
        } else if (!strcmp(n, "fork")) {
            rc = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
            if (rc == 0) _exit(0);
            if (rc > 0) waitpid(rc, 0, 0);
        } else if (!strcmp(n, "euid")) {
            printf("euid %d\n", (int)geteuid());
            continue;
        } else { printf("%s unknown\n", n); continue; }
        if (rc >= 0) printf("%s ok\n", n); else printf("%s %s\n", n, ename(errno));
    }
    return 0;
}
