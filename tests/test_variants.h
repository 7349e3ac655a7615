/* test_variants.h - re-running a test program under the other kernel variants this CPU has.
 * The variant is picked once per process from NX_KERNELS, so each one runs in a child process:
 * the program itself (self = argv[0]) with one argument (arg) that tells it to run the checks
 * that matter under every variant. Include after test.h. */
#ifndef NX_TEST_VARIANTS_H
#define NX_TEST_VARIANTS_H

#include "kernels/kernels.h"

#include <sys/wait.h>
#include <unistd.h>

/* Sets *ran to how many other variants ran; a failing child fails the current test. */
static void test_rerun_other_variants(const char *self, const char *arg, int *ran) {
    const char *names[] = {"ref", "avx2", "avx512"};
    *ran = 0;
    for (int i = 0; i < 3; i++) {
        if (!nx__kernels_variant(names[i]) || !strcmp(names[i], nx__kernels()->name)) continue;
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            setenv("NX_KERNELS", names[i], 1);
            execl(self, self, arg, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s %s under NX_KERNELS=%s failed", self, arg, names[i]);
        (*ran)++;
    }
}

#endif
