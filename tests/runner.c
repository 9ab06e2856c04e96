/* The CUnit runner: every suite, or those named on the command line. */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define SUITE(name) void suite_##name(void);
#include "suites.inc"
#undef SUITE

static int argc_g;
static char **argv_g;

static int wanted(const char *name)
{
    int i;

    if (argc_g < 2)
        return 1;
    for (i = 1; i < argc_g; i++)
        if (strcmp(argv_g[i], name) == 0)
            return 1;
    return 0;
}

void tu_add_suite(const char *name, CU_TestInfo *tests)
{
    CU_SuiteInfo suites[] = {{name, NULL, NULL, NULL, NULL, tests}, CU_SUITE_INFO_NULL};

    if (wanted(name) && CU_register_suites(suites) != CUE_SUCCESS)
        fprintf(stderr, "cannot register suite %s: %s\n", name, CU_get_error_msg());
}

int main(int argc, char **argv)
{
    unsigned failed;

    argc_g = argc;
    argv_g = argv;
    signal(SIGPIPE, SIG_IGN);   /* raw-socket tests; the library never needs it */
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
#define SUITE(name) suite_##name();
#include "suites.inc"
#undef SUITE
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    if (CU_get_number_of_tests_run() == 0) {
        fprintf(stderr, "no test ran\n");
        failed = 1;
    }
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
