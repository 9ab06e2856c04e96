/* Redis Cluster addressing: key slots against a real cluster-enabled
 * redis-server's CLUSTER KEYSLOT, its CLUSTER SLOTS reply parsed into a
 * slot map, malformed CLUSTER SLOTS replies (RESP bytes through hiredis'
 * own reader), MOVED / ASK redirect texts, redis+cluster:// URLs, and the
 * map and redirects of a live 3-primary cluster (tests/cluster.sh). */
#include <hiredis/hiredis.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "testutil.h"

/* Stops the node and removes its directory. */
static void stop_cluster_node(tu_server *s)
{
    char path[96];
    int port = s->port;

    tu_server_stop(s);
    snprintf(path, sizeof path, "/tmp/sluice-test-cluster-%d/nodes.conf", port);
    unlink(path);
    snprintf(path, sizeof path, "/tmp/sluice-test-cluster-%d/log", port);
    unlink(path);
    snprintf(path, sizeof path, "/tmp/sluice-test-cluster-%d", port);
    rmdir(path);
}

/* Starts one redis-server with cluster support on a free port (no slots
 * assigned: the caller assigns them).  0, or -1 after failing the test. */
static int start_cluster_node(tu_server *s)
{
    const char *bin = getenv("SLUICE_TEST_REDIS_SERVER");
    char port[16], bus[16], dir[64], conf[96], conf_log[96];
    int attempt, i;

    memset(s, 0, sizeof *s);
    if (!bin || !*bin) {
        CU_FAIL("SLUICE_TEST_REDIS_SERVER is not set (tests/run.sh sets it)");
        return -1;
    }
    /* A free port can be taken before redis-server binds it: try again. */
    for (attempt = 0; attempt < 3; attempt++) {
        s->port = tu_free_port();
        snprintf(port, sizeof port, "%d", s->port);
        /* The default bus port, port + 10000, may not exist or be free. */
        snprintf(bus, sizeof bus, "%d", tu_free_port());
        snprintf(dir, sizeof dir, "/tmp/sluice-test-cluster-%d", s->port);
        snprintf(conf, sizeof conf, "%s/nodes.conf", dir);
        snprintf(conf_log, sizeof conf_log, "%s/log", dir);
        mkdir(dir, 0700);
        unlink(conf);
        s->pid = fork();
        if (s->pid == 0) {
            int null = open(conf_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (null >= 0)
                dup2(null, 1);
            execl(bin, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                  "no", "--dir", dir, "--cluster-enabled", "yes", "--cluster-port", bus,
                  "--cluster-config-file", "nodes.conf", "--daemonize", "no", (char *)NULL);
            _exit(127);
        }
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
        for (i = 0; i < 1000 && s->pid > 0 && waitpid(s->pid, NULL, WNOHANG) == 0; i++) {
            redisContext *c = sl_redis_connect_url(s->url, 1000, NULL);
            if (c) {
                redisFree(c);
                return 0;
            }
            usleep(10000);
        }
        stop_cluster_node(s);
    }
    CU_FAIL("could not start a cluster-enabled redis-server");
    return -1;
}

static redisContext *connect_node(const tu_server *s)
{
    redisContext *c = sl_redis_connect_url(s->url, 2000, NULL);

    CU_ASSERT_PTR_NOT_NULL(c);
    return c;
}

/* --- slots ------------------------------------------------------------------- */

static void test_cluster_crc16_reference(void)
{
    /* The CRC16/XMODEM check value and the examples of the cluster spec. */
    CU_ASSERT_EQUAL(sl_cluster_crc16("123456789", 9), 0x31C3);
    CU_ASSERT_EQUAL(sl_cluster_keyslot("123456789", 9), 12739);
    CU_ASSERT_EQUAL(sl_cluster_keyslot("foo", 3), 12182);
    CU_ASSERT_EQUAL(sl_cluster_keyslot("{user1000}.following", 20),
                    sl_cluster_keyslot("{user1000}.followers", 20));
    CU_ASSERT_EQUAL(sl_cluster_keyslot("foo{}{bar}", 10), sl_cluster_crc16("foo{}{bar}", 10) % 16384);
    CU_ASSERT_EQUAL(sl_cluster_keyslot("foo{{bar}}zap", 13), sl_cluster_crc16("{bar", 4) % 16384);
    CU_ASSERT_EQUAL(sl_cluster_keyslot("foo{bar}{zap}", 13), sl_cluster_crc16("bar", 3) % 16384);
}

/* Every shape of key the limiter makes, and odd ones, against Redis. */
static void test_cluster_keyslot_matches_redis(void)
{
    static const char *const keys[] = {
        "sluice:{api.example.com}:/v1/items", "sluice:{svc}:*", "{", "}", "{}", "{}x", "x{}",
        "a{b}c", "a{b", "a}b{c}", "{{}}", "{a}{b}", "", "k", "sluice:{}:x", "p:{ünï}:e",
    };
    tu_server s;
    redisContext *c;
    char key[64];
    size_t i;
    int k;

    if (start_cluster_node(&s) != 0)
        return;
    c = connect_node(&s);
    for (i = 0; c && i < sizeof keys / sizeof keys[0] + 500; i++) {
        const char *kk = key;
        size_t len;
        redisReply *r;

        if (i < sizeof keys / sizeof keys[0]) {
            kk = keys[i];
        } else {
            k = (int)i;
            snprintf(key, sizeof key, k % 3 ? "pfx:{svc%d}:ep%d" : "key%d-%d", k * 7919, k);
        }
        len = strlen(kk);
        r = redisCommand(c, "CLUSTER KEYSLOT %b", kk, len);
        if (!r)
            printf("\n    CLUSTER KEYSLOT: %s (key %zu, port %d)\n", c->errstr, i, s.port);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_EQUAL(r->type, REDIS_REPLY_INTEGER);
        if (r->type == REDIS_REPLY_INTEGER && (long long)sl_cluster_keyslot(kk, len) != r->integer)
            CU_FAIL("CLUSTER KEYSLOT disagrees");
        freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    stop_cluster_node(&s);
}

/* --- CLUSTER SLOTS ------------------------------------------------------------ */

static void test_cluster_slots_from_a_real_node(void)
{
    sl_slot_map *map = calloc(1, sizeof *map);
    sluice_error err;
    redisReply *r;
    redisContext *c;
    tu_server s;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(map);
    if (start_cluster_node(&s) != 0) {
        free(map);
        return;
    }
    c = connect_node(&s);
    if (c) {
        r = redisCommand(c, "CLUSTER ADDSLOTSRANGE 0 5460 10923 16383");
        CU_ASSERT(r && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
        r = redisCommand(c, "CLUSTER SLOTS");
        CU_ASSERT_EQUAL(sl_cluster_parse_slots(r, "127.0.0.1", map, &err), 0);
        CU_ASSERT_EQUAL(map->nnodes, 1);
        CU_ASSERT_STRING_EQUAL(map->nodes[0].host, "127.0.0.1");
        CU_ASSERT_EQUAL(map->nodes[0].port, s.port);
        for (i = 0; i < SL_CLUSTER_SLOTS; i++) {
            int served = i <= 5460 || i >= 10923;
            if ((map->owner[i] == 0) != served) {
                CU_FAIL("slot owner wrong");
                break;
            }
            if (!served && map->owner[i] != SL_CLUSTER_NO_NODE)
                CU_FAIL("unserved slot has an owner");
        }
        freeReplyObject(r);
        redisFree(c);
    }
    stop_cluster_node(&s);
    free(map);
}

/* RESP bytes through hiredis' reader, then the parser. */
static int parse_resp(const char *resp, sl_slot_map *map, sluice_error *err)
{
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;
    int rc;

    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    sl_redis_bound_reader(rd);
    redisReaderFeed(rd, resp, strlen(resp));
    CU_ASSERT_EQUAL(redisReaderGetReply(rd, &reply), REDIS_OK);
    CU_ASSERT_PTR_NOT_NULL(reply);
    rc = sl_cluster_parse_slots(reply, "10.0.0.9", map, err);
    if (reply)
        freeReplyObject(reply);
    redisReaderFree(rd);
    return rc;
}

static void test_cluster_slots_malformed_refused(void)
{
    static const char *const bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        "+OK\r\n",
        "*1\r\n:5\r\n",
        "*1\r\n*2\r\n:0\r\n:10\r\n",                                        /* no primary */
        "*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",                  /* reversed */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",               /* past the end */
        "*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:0\r\n",                   /* port 0 */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:65536\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\n?\r\n:6379\r\n",                /* unknown endpoint */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$3\r\na b\r\n:6379\r\n",
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n:1\r\n:6379\r\n",                     /* host not a string */
        "*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\na\r\n",                         /* no port */
        "*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",              /* start a string */
    };
    sl_slot_map *map = calloc(1, sizeof *map);
    sluice_error err;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(map);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(parse_resp(bad[i], map, &err), SLUICE_ELIMITER);
        CU_ASSERT_EQUAL(map->nnodes, 0);
        CU_ASSERT_EQUAL(map->owner[0], SL_CLUSTER_NO_NODE);
    }
    /* Two primaries, one replica each, an empty host meaning the node asked. */
    CU_ASSERT_EQUAL(parse_resp("*2\r\n"
                               "*4\r\n:0\r\n:99\r\n*3\r\n$0\r\n\r\n:7000\r\n$2\r\nid\r\n"
                               "*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n"
                               "*3\r\n:100\r\n:16383\r\n*2\r\n$5\r\n[::1]\r\n:7001\r\n",
                               map, &err),
                    SLUICE_ELIMITER);   /* brackets are no host */
    CU_ASSERT_EQUAL(parse_resp("*2\r\n"
                               "*4\r\n:0\r\n:99\r\n*3\r\n$0\r\n\r\n:7000\r\n$2\r\nid\r\n"
                               "*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n"
                               "*3\r\n:100\r\n:16383\r\n*2\r\n$3\r\n::1\r\n:7001\r\n",
                               map, &err),
                    0);
    CU_ASSERT_EQUAL(map->nnodes, 2);
    CU_ASSERT_STRING_EQUAL(map->nodes[0].host, "10.0.0.9");
    CU_ASSERT_EQUAL(map->nodes[0].port, 7000);
    CU_ASSERT_STRING_EQUAL(map->nodes[1].host, "::1");
    CU_ASSERT_EQUAL(map->owner[99], 0);
    CU_ASSERT_EQUAL(map->owner[100], 1);
    CU_ASSERT_EQUAL(map->owner[16383], 1);
    free(map);
}

/* --- redirects ---------------------------------------------------------------- */

static void test_cluster_redirect_parsing(void)
{
    sl_redirect_kind kind;
    sl_cluster_addr to;
    sluice_error err;
    unsigned slot = 0;
    static const char *const bad[] = {
        "MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 ", "MOVED x 1.2.3.4:1", "MOVED 16384 a:1",
        "MOVED 1 a", "MOVED 1 a:", "MOVED 1 a:0", "MOVED 1 a:65536", "MOVED 1 a b:1",
        "ASK 1 a:1x", "ASK -1 a:1", "MOVED 99999999999 a:1", "ASK",
    };
    size_t i;

#define RD(s) sl_cluster_parse_redirect(s, strlen(s), &kind, &slot, &to, &err)
    CU_ASSERT_EQUAL(RD("MOVED 3999 127.0.0.1:6381"), 0);
    CU_ASSERT_EQUAL(kind, SL_REDIRECT_MOVED);
    CU_ASSERT_EQUAL(slot, 3999);
    CU_ASSERT_STRING_EQUAL(to.host, "127.0.0.1");
    CU_ASSERT_EQUAL(to.port, 6381);
    CU_ASSERT_EQUAL(RD("ASK 0 [::1]:7001"), 0);
    CU_ASSERT_EQUAL(kind, SL_REDIRECT_ASK);
    CU_ASSERT_EQUAL(slot, 0);
    CU_ASSERT_STRING_EQUAL(to.host, "::1");
    CU_ASSERT_EQUAL(to.port, 7001);
    CU_ASSERT_EQUAL(RD("MOVED 16383 :7002"), 0);   /* Redis 7: the endpoint is unknown */
    CU_ASSERT_STRING_EQUAL(to.host, "");
    CU_ASSERT_EQUAL(to.port, 7002);
    CU_ASSERT_EQUAL(RD("NOSCRIPT No matching script"), 0);
    CU_ASSERT_EQUAL(kind, SL_REDIRECT_NONE);
    CU_ASSERT_EQUAL(RD("TRYAGAIN Multiple keys request during rehashing of slot"), 0);
    CU_ASSERT_EQUAL(kind, SL_REDIRECT_NONE);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(RD(bad[i]), SLUICE_ELIMITER);
    /* Not NUL-terminated: the length bounds the parse. */
    CU_ASSERT_EQUAL(sl_cluster_parse_redirect("ASK 7 h:12345", 10, &kind, &slot, &to, &err), 0);
    CU_ASSERT_EQUAL(to.port, 12);
#undef RD
}

/* --- URLs ---------------------------------------------------------------------- */

static void test_cluster_url_parsing(void)
{
    static const char *const bad[] = {
        "redis+cluster://",          "redis+cluster://h:1/1",     "redis+cluster://h:1/db",
        "redis+cluster://h:1?x=1",   "redis+cluster://h:1#f",     "redis+cluster://h:1,,h:2",
        "redis+cluster://,h:1",      "redis+cluster://h:0",       "redis+cluster://h:1,h:99999",
        "redis+cluster://u@h:1",     "redis+cluster://:@h:1",     "redis://h:1",
        "redis+cluster://h h:1",     NULL,
    };
    sl_redis_url *seeds;
    sluice_error err;
    size_t n, i;

    CU_ASSERT_EQUAL(sl_redis_cluster_url_parse("redis+cluster://user:s%40cret@127.0.0.1:7000,"
                                               "[::1]:7001,node-3/0",
                                               &seeds, &n, &err),
                    0);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_STRING_EQUAL(seeds[0].host, "127.0.0.1");
    CU_ASSERT_EQUAL(seeds[0].port, 7000);
    CU_ASSERT_STRING_EQUAL(seeds[1].host, "::1");
    CU_ASSERT_STRING_EQUAL(seeds[1].where, "[::1]:7001");
    CU_ASSERT_STRING_EQUAL(seeds[2].host, "node-3");
    CU_ASSERT_EQUAL(seeds[2].port, 6379);
    for (i = 0; i < n; i++) {
        CU_ASSERT_STRING_EQUAL(seeds[i].user, "user");
        CU_ASSERT_STRING_EQUAL(seeds[i].password, "s@cret");
        CU_ASSERT_PTR_NULL(strstr(seeds[i].display, "s@cret"));
        CU_ASSERT_EQUAL(seeds[i].db, 0);
    }
    sl_redis_cluster_url_free(seeds, n);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        seeds = (sl_redis_url *)1;
        CU_ASSERT_EQUAL(sl_redis_cluster_url_parse(bad[i], &seeds, &n, &err), SLUICE_EINVAL);
        CU_ASSERT_PTR_NULL(seeds);
        CU_ASSERT_PTR_NULL(strstr(err.msg, "cret"));
    }
    CU_ASSERT_EQUAL(sl_redis_cluster_url_parse("redis+cluster://h:1/5", &seeds, &n, &err),
                    SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "db 0"));
}

/* --- a live cluster (tests/cluster.sh, started by tests/run.sh) ---------------- */

/* The first seed of $SLUICE_TEST_CLUSTER as a redis:// URL, or NULL after
 * failing the test with the reason. */
static const char *cluster_seed_url(char *buf, size_t cap)
{
    const char *seeds = getenv("SLUICE_TEST_CLUSTER");
    size_t n;

    if (!seeds || !*seeds) {
        CU_FAIL("SLUICE_TEST_CLUSTER is not set (tests/run.sh starts the test cluster)");
        return NULL;
    }
    n = strcspn(seeds, ",");
    snprintf(buf, cap, "redis://%.*s", (int)n, seeds);
    return buf;
}

/* The map from CLUSTER SLOTS names the 3 primaries and covers every slot;
 * keys of many services, sent to the primary the map names, are never
 * redirected and land on every shard; a key sent to a wrong primary comes
 * back as MOVED naming the slot and the owner the map names. */
static void test_cluster_live_map_routes_every_key(void)
{
    sl_slot_map *map = calloc(1, sizeof *map);
    redisContext *node[SL_CLUSTER_MAX_NODES > 8 ? 8 : SL_CLUSTER_MAX_NODES] = {0};
    int used[8] = {0}, moved_checked = 0;
    char url[128], key[64];
    sluice_error err;
    redisContext *c;
    redisReply *r;
    size_t i, k;

    CU_ASSERT_PTR_NOT_NULL_FATAL(map);
    if (!cluster_seed_url(url, sizeof url) || !(c = sl_redis_connect_url(url, 2000, &err))) {
        CU_FAIL("cannot reach the test cluster");
        free(map);
        return;
    }
    r = redisCommand(c, "CLUSTER SLOTS");
    CU_ASSERT_EQUAL(sl_cluster_parse_slots(r, "127.0.0.1", map, &err), 0);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    CU_ASSERT_EQUAL_FATAL(map->nnodes, 3);
    for (i = 0; i < SL_CLUSTER_SLOTS; i++)
        if (map->owner[i] >= map->nnodes) {
            CU_FAIL("a slot has no primary");
            break;
        }
    for (i = 0; i < map->nnodes; i++) {
        snprintf(url, sizeof url, "redis://%s:%d", map->nodes[i].host, map->nodes[i].port);
        node[i] = sl_redis_connect_url(url, 2000, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(node[i]);
    }
    for (k = 0; k < 300; k++) {
        unsigned slot;
        size_t len = (size_t)snprintf(key, sizeof key, "sluice:{svc%zu}:/v1/x", k);
        size_t own;

        slot = sl_cluster_keyslot(key, len);
        own = map->owner[slot];
        used[own] = 1;
        r = redisCommand(node[own], "SET %b 1 PX 60000", key, len);
        CU_ASSERT(r && r->type == REDIS_REPLY_STATUS);
        if (r)
            freeReplyObject(r);
        if (moved_checked < 20) {
            sl_redirect_kind kind;
            sl_cluster_addr to;
            unsigned got;

            r = redisCommand(node[(own + 1) % map->nnodes], "GET %b", key, len);
            CU_ASSERT_PTR_NOT_NULL_FATAL(r);
            CU_ASSERT_EQUAL(r->type, REDIS_REPLY_ERROR);
            CU_ASSERT_EQUAL(sl_cluster_parse_redirect(r->str, r->len, &kind, &got, &to, &err), 0);
            CU_ASSERT_EQUAL(kind, SL_REDIRECT_MOVED);
            CU_ASSERT_EQUAL(got, slot);
            CU_ASSERT_EQUAL(to.port, map->nodes[own].port);
            CU_ASSERT_STRING_EQUAL(to.host, map->nodes[own].host);
            freeReplyObject(r);
            moved_checked++;
        }
    }
    CU_ASSERT(used[0] && used[1] && used[2]);
    for (i = 0; i < map->nnodes; i++)
        if (node[i])
            redisFree(node[i]);
    free(map);
}

static CU_TestInfo tests[] = {
    {"test_cluster_crc16_reference", test_cluster_crc16_reference},
    {"test_cluster_keyslot_matches_redis", test_cluster_keyslot_matches_redis},
    {"test_cluster_slots_from_a_real_node", test_cluster_slots_from_a_real_node},
    {"test_cluster_slots_malformed_refused", test_cluster_slots_malformed_refused},
    {"test_cluster_redirect_parsing", test_cluster_redirect_parsing},
    {"test_cluster_url_parsing", test_cluster_url_parsing},
    {"test_cluster_live_map_routes_every_key", test_cluster_live_map_routes_every_key},
    CU_TEST_INFO_NULL,
};

void suite_redis_cluster(void);
void suite_redis_cluster(void)
{
    tu_add_suite("redis_cluster", tests);
}
