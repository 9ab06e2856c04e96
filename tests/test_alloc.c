/* The replaceable allocator: injection fails exactly the chosen allocation. */
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "testutil.h"

static void test_alloc_fails_exactly_n(void)
{
    void *p[5];
    int i;

    tu_alloc_install(3, 0);
    for (i = 0; i < 5; i++)
        p[i] = sl_malloc(16);
    CU_ASSERT_PTR_NOT_NULL(p[0]);
    CU_ASSERT_PTR_NOT_NULL(p[1]);
    CU_ASSERT_PTR_NULL(p[2]);
    CU_ASSERT_PTR_NOT_NULL(p[3]);
    CU_ASSERT_PTR_NOT_NULL(p[4]);
    CU_ASSERT_EQUAL(tu_alloc_count(), 5);
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 4);
    for (i = 0; i < 5; i++)
        sl_free(p[i]);
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
    tu_alloc_uninstall();
}

static void test_alloc_sticky_and_helpers(void)
{
    char *s;
    sl_buf b = SL_BUF_INIT;

    tu_alloc_install(2, 1);
    s = sl_strdup("abc");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s, "abc");
    CU_ASSERT_PTR_NULL(sl_strdup("def"));
    CU_ASSERT_PTR_NULL(sl_calloc(2, 8));
    /* A buffer whose growth fails reports ENOMEM and stays failed. */
    CU_ASSERT_EQUAL(sl_buf_puts(&b, "hello"), SLUICE_ENOMEM);
    CU_ASSERT_EQUAL(sl_buf_puts(&b, "x"), SLUICE_ENOMEM);
    sl_buf_free(&b);
    sl_free(s);
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
    tu_alloc_uninstall();
    /* Overflow in calloc is refused without calling the allocator. */
    CU_ASSERT_PTR_NULL(sl_calloc((size_t)-1 / 2, 4));
}

static void test_alloc_buf_grows(void)
{
    sl_buf b = SL_BUF_INIT;
    char *d;
    size_t len;
    int i;

    for (i = 0; i < 1000; i++)
        CU_ASSERT_EQUAL(sl_buf_printf(&b, "%04d", i), 0);
    CU_ASSERT_EQUAL(b.len, 4000);
    CU_ASSERT(memcmp(b.data + 3996, "0999", 4) == 0);
    sl_buf_consume(&b, 3996);
    CU_ASSERT_STRING_EQUAL(b.data, "0999");
    d = sl_buf_detach(&b, &len);
    CU_ASSERT_EQUAL(len, 4);
    CU_ASSERT_PTR_NULL(b.data);
    sl_free(d);
}

static void test_alloc_buf_detach_unwritten_is_terminated(void)
{
    sl_buf b = SL_BUF_INIT;
    size_t len = 99;
    char *d;

    CU_ASSERT_EQUAL(sl_buf_reserve(&b, 100), 0);
    memset(b.data, 'x', b.cap);   /* what an allocator may hand back */
    d = sl_buf_detach(&b, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_EQUAL(d[0], '\0');
    sl_free(d);
}

static CU_TestInfo tests[] = {
    {"test_alloc_fails_exactly_n", test_alloc_fails_exactly_n},
    {"test_alloc_sticky_and_helpers", test_alloc_sticky_and_helpers},
    {"test_alloc_buf_grows", test_alloc_buf_grows},
    {"test_alloc_buf_detach_unwritten_is_terminated", test_alloc_buf_detach_unwritten_is_terminated},
    CU_TEST_INFO_NULL,
};

void suite_alloc(void);
void suite_alloc(void)
{
    tu_add_suite("alloc", tests);
}
