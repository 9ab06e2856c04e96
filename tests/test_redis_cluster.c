/* Redis Cluster addressing: key slots against a real cluster-enabled
 * redis-server's CLUSTER KEYSLOT, its CLUSTER SLOTS reply parsed into a
 * slot map, malformed CLUSTER SLOTS replies (RESP bytes through hiredis'
 * own reader), MOVED / ASK redirect texts, redis+cluster:// URLs, the
 * map and redirects of a live 3-primary cluster (tests/cluster.sh), and
 * the rate limiter on that cluster: a cross-slot burst, a slot moved
 * (MOVED), a slot half migrated (ASK, NOSCRIPT on the target), settings
 * refused, a reshard by redis-cli under load, a refresh stuck on a silent
 * node, a replica's clean failover, a primary killed, and last a shard
 * lost without a replica (the last three change the cluster). */
#include <hiredis/hiredis.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "limiter.h"
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

/* --- the rate limiter on the live cluster -------------------------------------- */

/* The test cluster's primaries as the map names them, a connection to each
 * and its node id. */
typedef struct live {
    sl_slot_map *map;
    redisContext *node[8];
    char id[8][48];
} live;

static void live_close(live *lv)
{
    size_t i;

    for (i = 0; i < 8; i++)
        if (lv->node[i])
            redisFree(lv->node[i]);
    free(lv->map);
    memset(lv, 0, sizeof *lv);
}

/* 0, or -1 after failing the test. */
static int live_open(live *lv)
{
    char url[128];
    sluice_error err;
    redisContext *c;
    redisReply *r;
    size_t i;

    memset(lv, 0, sizeof *lv);
    if (!cluster_seed_url(url, sizeof url) || !(lv->map = calloc(1, sizeof *lv->map)))
        return -1;
    if (!(c = sl_redis_connect_url(url, 2000, &err))) {
        CU_FAIL("cannot reach the test cluster");
        live_close(lv);
        return -1;
    }
    r = redisCommand(c, "CLUSTER SLOTS");
    CU_ASSERT_EQUAL(sl_cluster_parse_slots(r, "127.0.0.1", lv->map, &err), 0);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    if (lv->map->nnodes != 3) {
        CU_FAIL("the test cluster does not have 3 primaries");
        live_close(lv);
        return -1;
    }
    for (i = 0; i < lv->map->nnodes; i++) {
        snprintf(url, sizeof url, "redis://%s:%d", lv->map->nodes[i].host, lv->map->nodes[i].port);
        if (!(lv->node[i] = sl_redis_connect_url(url, 2000, &err)) ||
            !(r = redisCommand(lv->node[i], "CLUSTER MYID")) || r->type != REDIS_REPLY_STRING) {
            CU_FAIL("cannot reach a primary of the test cluster");
            live_close(lv);
            return -1;
        }
        snprintf(lv->id[i], sizeof lv->id[i], "%s", r->str);
        freeReplyObject(r);
    }
    return 0;
}

/* The index of the primary serving the limiter key prefix:key. */
static size_t live_owner(const live *lv, const char *prefix, const char *key)
{
    char full[256];
    int n = snprintf(full, sizeof full, "%s:%s", prefix, key);

    return lv->map->owner[sl_cluster_keyslot(full, (size_t)n)];
}

static unsigned key_slot(const char *prefix, const char *key)
{
    char full[256];
    int n = snprintf(full, sizeof full, "%s:%s", prefix, key);

    return sl_cluster_keyslot(full, (size_t)n);
}

/* Runs a command and checks the reply is not an error. */
static void must(redisContext *c, const char *what, redisReply *r)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "%s: %s\n", what, r ? r->str : c->errstr);
    CU_ASSERT(r && r->type != REDIS_REPLY_ERROR);
    if (r)
        freeReplyObject(r);
}

/* "field:value" of INFO or CLUSTER INFO text into buf. */
static int info_field(redisContext *c, const char *cmd, const char *field, char *buf, size_t cap)
{
    redisReply *r = redisCommand(c, cmd);
    const char *p;
    size_t n;
    int ok = 0;

    if (r && r->type == REDIS_REPLY_STRING &&
        (p = strstr(r->str, field))) {
        p += strlen(field);
        n = strcspn(p, "\r\n");
        snprintf(buf, cap, "%.*s", (int)n, p);
        ok = 1;
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

static int cluster_ok(redisContext *c)
{
    char v[32];

    return info_field(c, "CLUSTER INFO", "cluster_state:", v, sizeof v) && strcmp(v, "ok") == 0;
}

static sluice_limiter *cluster_limiter(const char *prefix, sluice_fail_mode mode, int timeout_ms,
                                       sluice_error *err)
{
    const char *seeds = getenv("SLUICE_TEST_CLUSTER");
    char url[512];

    if (!seeds || !*seeds) {
        CU_FAIL("SLUICE_TEST_CLUSTER is not set (tests/run.sh starts the test cluster)");
        return NULL;
    }
    snprintf(url, sizeof url, "redis+cluster://%s", seeds);
    return tu_limiter(url, prefix, mode, timeout_ms, err);
}

static void test_cluster_limiter_config_errors(void)
{
    static const char *const bad[] = {
        "redis+cluster://", "redis+cluster://127.0.0.1:1/1", "redis+cluster://127.0.0.1:1,,x:2",
        "redis+cluster://127.0.0.1:0", "redis+cluster://127.0.0.1:1?db=0",
    };
    const char *redis = tu_redis_url(), *seeds = getenv("SLUICE_TEST_CLUSTER");
    struct sluice_limiter_stats st;
    sluice_limit lim = {1, 60000, 2};
    sluice_limit_result r;
    sluice_limiter_opts o;
    sluice_limiter *l;
    sluice_error err;
    char url[512];
    size_t i;

    TU_REQUIRE(redis && seeds);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l = sluice_limiter_new(bad[i], NULL, &err);
        CU_ASSERT_PTR_NULL(l);
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        sluice_limiter_free(l);
    }
    l = sluice_limiter_new("redis+cluster://127.0.0.1:1/1", NULL, &err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "db"));
    /* A brace in the prefix would become every key's hash tag. */
    snprintf(url, sizeof url, "redis+cluster://%s", seeds);
    sluice_limiter_opts_init(&o);
    o.prefix = "app{x}";
    l = sluice_limiter_new(url, &o, &err);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "prefix"));
    sluice_limiter_free(l);
    o.prefix = "app}";
    CU_ASSERT_PTR_NULL(sluice_limiter_new(url, &o, &err));
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    /* A plain Redis given as a seed. */
    snprintf(url, sizeof url, "redis+cluster://%s", redis + strlen("redis://"));
    l = sluice_limiter_new(url, NULL, &err);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cluster support disabled"));
    sluice_limiter_free(l);
    /* No seed reachable: created, decisions in the fail mode. */
    o.prefix = "sluice";
    o.fail_mode = SLUICE_FAIL_CLOSED;
    l = sluice_limiter_new("redis+cluster://127.0.0.1:1", &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, "{a}:b", &lim, 1, &r), SLUICE_ELIMITER);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 1);
    CU_ASSERT_EQUAL(st.cluster_node_fallbacks, 1);
    CU_ASSERT_EQUAL(st.cluster_nodes, 0);
    CU_ASSERT_EQUAL(sluice_limiter_is_shared(l), 1);
    sluice_limiter_free(l);
}

/* A factory whose limiter runs on the cluster exports the cluster counters
 * and one sample per node, in Prometheus and JSON. */
static void test_cluster_limiter_metrics_export(void)
{
    const char *seeds = getenv("SLUICE_TEST_CLUSTER");
    sluice_factory_opts fo;
    sluice_factory *f;
    sluice_error err;
    char url[512], sample[128], first[64];
    size_t cap = 1 << 20, n;
    char *buf = malloc(cap);

    TU_REQUIRE(seeds && buf);
    snprintf(url, sizeof url, "redis+cluster://%s", seeds);
    snprintf(first, sizeof first, "%.*s", (int)strcspn(seeds, ","), seeds);
    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.redis_url = url;
    f = sluice_factory_new(&fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    n = sluice_factory_metrics(f, SLUICE_METRICS_PROMETHEUS, buf, cap);
    CU_ASSERT(n > 0 && n < cap);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nsluice_limiter_cluster_nodes 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nsluice_limiter_cluster_refreshes_total 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\nsluice_limiter_cluster_moved_total 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "# TYPE sluice_limiter_node_fallbacks_total counter\n"));
    snprintf(sample, sizeof sample, "\nsluice_limiter_node_primary{node=\"%s\"} ", first);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, sample));
    n = sluice_factory_metrics(f, SLUICE_METRICS_JSON, buf, cap);
    CU_ASSERT(n > 0 && n < cap);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"cluster_nodes\":3"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"cluster_node_fallbacks\":0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"nodes\":[{\"node\":\"127.0.0.1:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"primary\":1,\"round_trips\":0,\"decisions\":0,"
                                       "\"redis_errors\":0,\"fallbacks\":0}"));
    sluice_factory_free(f);
    free(buf);
}

/* --- (a) a cross-slot burst ----------------------------------------------------- */

#define BURST_KEYS 24
#define BURST_THREADS 6
#define BURST_TRIES 2

typedef struct burst {
    sluice_limiter *l;
    pthread_barrier_t *go;
    char (*keys)[32];
    int allowed[BURST_KEYS];
    int errors;
} burst;

static void *burst_worker(void *arg)
{
    burst *b = arg;
    sluice_limit lim = {1, 600000, 5};
    sluice_limit_result r;
    int t, k;

    pthread_barrier_wait(b->go);
    for (t = 0; t < BURST_TRIES; t++)
        for (k = 0; k < BURST_KEYS; k++) {
            if (sluice_limiter_check(b->l, b->keys[k], &lim, 1, &r) != 0)
                b->errors++;
            else if (r.allowed)
                b->allowed[k]++;
        }
    return NULL;
}

/* Concurrent decisions for services on all three shards, batched per node:
 * each key admits exactly its burst, as one Redis would, with no error
 * and no fallback (one EVALSHA for keys of several slots is CROSSSLOT). */
static void test_cluster_limiter_cross_slot_burst(void)
{
    char prefix[64], keys[BURST_KEYS][32];
    struct sluice_limiter_stats st;
    struct sluice_limiter_node_stats ns[8];
    uint64_t rt = 0, dec = 0;
    size_t nn, j;
    burst b[BURST_THREADS];
    pthread_t th[BURST_THREADS];
    pthread_barrier_t go;
    int shard[3] = {0}, total, i, k;
    sluice_limiter *l;
    sluice_error err;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "ta");
    for (k = 0; k < BURST_KEYS; k++) {
        snprintf(keys[k], sizeof keys[k], "{svc%d}:/v1/x", k);
        shard[live_owner(&lv, prefix, keys[k])]++;
    }
    CU_ASSERT(shard[0] && shard[1] && shard[2]);
    l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 3000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    pthread_barrier_init(&go, NULL, BURST_THREADS);
    for (i = 0; i < BURST_THREADS; i++) {
        memset(&b[i], 0, sizeof b[i]);
        b[i].l = l;
        b[i].go = &go;
        b[i].keys = keys;
        pthread_create(&th[i], NULL, burst_worker, &b[i]);
    }
    for (i = 0; i < BURST_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (k = 0; k < BURST_KEYS; k++) {
        for (total = 0, i = 0; i < BURST_THREADS; i++)
            total += b[i].allowed[k];
        CU_ASSERT_EQUAL(total, 5);
    }
    for (i = 0; i < BURST_THREADS; i++)
        CU_ASSERT_EQUAL(b[i].errors, 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT_EQUAL(st.cluster_node_fallbacks, 0);
    CU_ASSERT_EQUAL(st.cluster_nodes, 3);
    CU_ASSERT_EQUAL(st.allowed, 5 * BURST_KEYS);
    CU_ASSERT_EQUAL(st.decisions, BURST_KEYS * BURST_THREADS * BURST_TRIES);
    CU_ASSERT(st.round_trips > 0 && st.round_trips <= st.decisions);
    CU_ASSERT_EQUAL(st.cluster_moved + st.cluster_ask + st.cluster_tryagain, 0);
    CU_ASSERT(st.cluster_refreshes >= 1);
    nn = sluice_limiter_cluster_nodes(l, ns, 8);
    CU_ASSERT_EQUAL(nn, 3);
    CU_ASSERT_EQUAL(sluice_limiter_cluster_nodes(l, NULL, 0), 3);
    for (j = 0; j < nn && j < 8; j++) {
        CU_ASSERT_EQUAL(ns[j].primary, 1);
        CU_ASSERT(ns[j].decisions > 0);
        CU_ASSERT_EQUAL(ns[j].fallbacks, 0);
        rt += ns[j].round_trips;
        dec += ns[j].decisions;
    }
    CU_ASSERT_EQUAL(rt, st.round_trips);
    CU_ASSERT_EQUAL(dec, st.decisions);
    sluice_limiter_free(l);
    live_close(&lv);
}

/* --- (b) a slot moved by hand: MOVED -------------------------------------------- */

/* The first half of moving `slot` from primary src to dst: IMPORTING on
 * dst, MIGRATING on src.  Keys still on src are answered there, the
 * others with ASK to dst. */
static void begin_migration(live *lv, unsigned slot, size_t src, size_t dst)
{
    must(lv->node[dst], "IMPORTING",
         redisCommand(lv->node[dst], "CLUSTER SETSLOT %u IMPORTING %s", slot, lv->id[src]));
    must(lv->node[src], "MIGRATING",
         redisCommand(lv->node[src], "CLUSTER SETSLOT %u MIGRATING %s", slot, lv->id[dst]));
}

/* Calls a half migration off, the slot staying on src: `key` (a full Redis
 * key), which dst took meanwhile through ASK, is deleted there, and both
 * sides are STABLE again. */
static void abort_migration(live *lv, unsigned slot, size_t src, size_t dst, const char *key)
{
    must(lv->node[dst], "ASKING", redisCommand(lv->node[dst], "ASKING"));
    must(lv->node[dst], "DEL", redisCommand(lv->node[dst], "DEL %s", key));
    must(lv->node[dst], "STABLE", redisCommand(lv->node[dst], "CLUSTER SETSLOT %u STABLE", slot));
    must(lv->node[src], "STABLE", redisCommand(lv->node[src], "CLUSTER SETSLOT %u STABLE", slot));
}

/* Moves `slot` from primary src to dst the way redis-cli --cluster reshard
 * does: IMPORTING / MIGRATING, MIGRATE every key, then the new owner on
 * every primary. */
static void move_slot(live *lv, unsigned slot, size_t src, size_t dst)
{
    redisReply *keys;
    size_t i;

    begin_migration(lv, slot, src, dst);
    keys = redisCommand(lv->node[src], "CLUSTER GETKEYSINSLOT %u 100", slot);
    CU_ASSERT_FATAL(keys && keys->type == REDIS_REPLY_ARRAY);
    for (i = 0; i < keys->elements; i++)
        must(lv->node[src], "MIGRATE",
             redisCommand(lv->node[src], "MIGRATE 127.0.0.1 %d %b 0 5000",
                          lv->map->nodes[dst].port, keys->element[i]->str,
                          (size_t)keys->element[i]->len));
    freeReplyObject(keys);
    must(lv->node[dst], "NODE dst",
         redisCommand(lv->node[dst], "CLUSTER SETSLOT %u NODE %s", slot, lv->id[dst]));
    must(lv->node[src], "NODE src",
         redisCommand(lv->node[src], "CLUSTER SETSLOT %u NODE %s", slot, lv->id[dst]));
    for (i = 0; i < 3; i++)
        if (i != src && i != dst)
            must(lv->node[i], "NODE other",
                 redisCommand(lv->node[i], "CLUSTER SETSLOT %u NODE %s", slot, lv->id[dst]));
}

/* Burst 5: three decisions before the slot moves, two after it are
 * admitted (the key's TAT moved with it), the sixth is denied, and the
 * stale map cost exactly one MOVED. */
static void test_cluster_limiter_moved_slot(void)
{
    const char *key = "{moved}:/v1/x";
    sluice_limit lim = {1, 600000, 5};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    char prefix[64];
    sluice_limiter *l;
    sluice_error err;
    size_t src;
    int i;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "tb");
    l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 3000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    src = live_owner(&lv, prefix, key);
    move_slot(&lv, key_slot(prefix, key), src, (src + 1) % 3);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.cluster_moved, 1);
    CU_ASSERT_EQUAL(st.cluster_ask, 0);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    sluice_limiter_free(l);
    live_close(&lv);
}

/* --- (c) a slot half migrated: ASK, NOSCRIPT on the target ---------------------- */

static long script_exists(redisContext *c, const char *sha)
{
    redisReply *r = redisCommand(c, "SCRIPT EXISTS %s", sha);
    long v = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0]->integer : -1;

    if (r)
        freeReplyObject(r);
    return v;
}

/* While a slot migrates, a key still on the source is decided there and a
 * key not there is asked of the target (ASKING), whose script cache was
 * flushed after the limiter had loaded it: NOSCRIPT, SCRIPT LOAD, sent
 * again.  Each decision of that key is one ASK; the map is unchanged. */
static void test_cluster_limiter_ask_noscript(void)
{
    const char *old_key = "{ask}:/old", *new_key = "{ask}:/new";
    sluice_limit lim = {1, 600000, 5};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    char prefix[64], dst_key[32], sha[48], full[128];
    sluice_limiter *l;
    sluice_error err;
    redisReply *rep;
    size_t src, dst;
    unsigned slot;
    int i;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "tc");
    src = live_owner(&lv, prefix, old_key);
    dst = (src + 1) % 3;
    slot = key_slot(prefix, old_key);
    for (i = 0; i < 1000; i++) {   /* a key the target owns, to connect to it */
        snprintf(dst_key, sizeof dst_key, "{dst%d}:/x", i);
        if (live_owner(&lv, prefix, dst_key) == dst)
            break;
    }
    l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 3000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, dst_key, &lim, 1, &r), 0);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, old_key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    rep = redisCommand(lv.node[src], "SCRIPT LOAD %s", sl_redis_script);
    CU_ASSERT_FATAL(rep && rep->type == REDIS_REPLY_STRING);
    snprintf(sha, sizeof sha, "%s", rep->str);
    freeReplyObject(rep);
    CU_ASSERT_EQUAL(script_exists(lv.node[dst], sha), 1);
    begin_migration(&lv, slot, src, dst);
    must(lv.node[dst], "SCRIPT FLUSH", redisCommand(lv.node[dst], "SCRIPT FLUSH"));
    CU_ASSERT_EQUAL(script_exists(lv.node[dst], sha), 0);

    for (i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, new_key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, i < 5);
    }
    for (i = 0; i < 3; i++) {   /* still on the source: 2 of 5 used */
        CU_ASSERT_EQUAL(sluice_limiter_check(l, old_key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    CU_ASSERT_EQUAL(sluice_limiter_check(l, old_key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.cluster_ask, 6);
    CU_ASSERT_EQUAL(st.cluster_moved, 0);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT_EQUAL(script_exists(lv.node[dst], sha), 1);
    sluice_limiter_free(l);

    /* Back to stable, without the key the target took. */
    snprintf(full, sizeof full, "%s:%s", prefix, new_key);
    abort_migration(&lv, slot, src, dst, full);
    live_close(&lv);
}

/* --- a multi-key EVALSHA during a migration: TRYAGAIN ------------------------- */

#define TRY_THREADS 6
#define TRY_ROUNDS 30
#define TRY_BURST 40

typedef struct tryrun {
    sluice_limiter *l;
    pthread_barrier_t *go;
    int allowed[2], errors;
} tryrun;

static void *try_worker(void *arg)
{
    static const char *const keys[2] = {"{try}:/old", "{try}:/new"};
    tryrun *t = arg;
    sluice_limit lim = {1, 600000, TRY_BURST};
    sluice_limit_result r;
    int i;

    pthread_barrier_wait(t->go);
    for (i = 0; i < 2 * TRY_ROUNDS; i++) {
        if (sluice_limiter_check(t->l, keys[i % 2], &lim, 1, &r) != 0)
            t->errors++;
        else if (r.allowed)
            t->allowed[i % 2]++;
    }
    return NULL;
}

/* While a slot migrates, an EVALSHA holding a key still on the source and
 * one that is not gets TRYAGAIN; each decision goes again alone (the first
 * decided on the source, the second asked of the target).  One connection
 * makes concurrent decisions share EVALSHAs, so batches hold both keys;
 * every decision still counts exactly once. */
static void test_cluster_limiter_tryagain(void)
{
    sluice_limit lim = {1, 600000, TRY_BURST};
    struct sluice_limiter_stats st;
    tryrun t[TRY_THREADS];
    pthread_t th[TRY_THREADS];
    pthread_barrier_t go;
    sluice_limiter_opts o;
    sluice_limit_result r;
    char prefix[64], url[512], full[128];
    int i, allowed[2] = {0, 0}, errors = 0;
    sluice_error err;
    size_t src, dst;
    unsigned slot;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "tt");
    src = live_owner(&lv, prefix, "{try}:/old");
    dst = (src + 2) % 3;
    slot = key_slot(prefix, "{try}:/old");
    snprintf(url, sizeof url, "redis+cluster://%s", getenv("SLUICE_TEST_CLUSTER"));
    sluice_limiter_opts_init(&o);
    o.prefix = prefix;
    o.fail_mode = SLUICE_FAIL_CLOSED;
    o.redis_timeout_ms = 3000;
    o.pool_size = 1;
    t[0].l = sluice_limiter_new(url, &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t[0].l);
    CU_ASSERT_EQUAL(sluice_limiter_check(t[0].l, "{try}:/old", &lim, 1, &r), 0);
    begin_migration(&lv, slot, src, dst);
    pthread_barrier_init(&go, NULL, TRY_THREADS);
    for (i = 0; i < TRY_THREADS; i++) {
        t[i].l = t[0].l;
        t[i].go = &go;
        t[i].allowed[0] = t[i].allowed[1] = t[i].errors = 0;
        pthread_create(&th[i], NULL, try_worker, &t[i]);
    }
    for (i = 0; i < TRY_THREADS; i++) {
        pthread_join(th[i], NULL);
        allowed[0] += t[i].allowed[0];
        allowed[1] += t[i].allowed[1];
        errors += t[i].errors;
    }
    pthread_barrier_destroy(&go);
    CU_ASSERT_EQUAL(errors, 0);
    CU_ASSERT_EQUAL(allowed[0], TRY_BURST - 1);
    CU_ASSERT_EQUAL(allowed[1], TRY_BURST);
    sluice_limiter_stats(t[0].l, &st);
    CU_ASSERT(st.cluster_tryagain > 0);
    CU_ASSERT(st.cluster_ask > 0);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    sluice_limiter_free(t[0].l);

    snprintf(full, sizeof full, "%s:{try}:/new", prefix);
    abort_migration(&lv, slot, src, dst, full);
    live_close(&lv);
}

/* --- (e) a reshard under load: redis-cli --cluster reshard ------------------- */

#define RESHARD_THREADS 16
#define RESHARD_KEYS 48
#define RESHARD_RATE 20            /* per second */
#define RESHARD_BURST 10
#define RESHARD_SLOTS 2000
/* Keys that share the slot of two of the test keys: redis-cli migrates
 * them 10 per MIGRATE, which keeps that slot half migrated (ASK, and
 * TRYAGAIN for a batch holding both keys) for a while. */
#define RESHARD_FILL 5000

typedef struct reshard {
    sluice_limiter *l;
    char keys[RESHARD_KEYS][48];
    _Atomic int stop;
    _Atomic long allowed[RESHARD_KEYS];
    _Atomic long errors;
} reshard;

typedef struct reshard_worker_arg {
    reshard *rs;
    int first;
} reshard_worker_arg;

static void *reshard_worker(void *arg)
{
    reshard_worker_arg *a = arg;
    reshard *rs = a->rs;
    sluice_limit lim = {RESHARD_RATE, 1000, RESHARD_BURST};
    sluice_limit_result r;
    int i;

    for (i = a->first; !atomic_load(&rs->stop); i++) {
        int k = i % RESHARD_KEYS;

        if (sluice_limiter_check(rs->l, rs->keys[k], &lim, 1, &r) != 0)
            atomic_fetch_add(&rs->errors, 1);
        else if (r.allowed)
            atomic_fetch_add(&rs->allowed[k], 1);
        usleep(2000);
    }
    return NULL;
}

/* Runs a shell command line; 0 when it exited 0. */
static int run_cmd(const char *cmd)
{
    int st = system(cmd);

    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The port CLUSTER SLOTS on c names for `slot`, or 0. */
static int slot_owner_port(redisContext *c, unsigned slot)
{
    sl_slot_map *m = calloc(1, sizeof *m);
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    sluice_error err;
    int port = 0;

    if (m && r && sl_cluster_parse_slots(r, "127.0.0.1", m, &err) == 0 && m->owner[slot] < m->nnodes)
        port = m->nodes[m->owner[slot]].port;
    if (r)
        freeReplyObject(r);
    free(m);
    return port;
}

/* 16 threads decide keys on every shard, RESHARD_RATE per second with a
 * burst of RESHARD_BURST, while redis-cli moves 2000 slots from one primary
 * to another.  Each key's TAT moves with its slot (MIGRATE), every
 * decision is Redis's, so no key admits more than burst + rate * T over
 * the T seconds of the run, whichever node decided each time.  MOVED (the
 * map gone stale) and ASK (a slot half migrated) were both followed. */
static void test_cluster_limiter_reshard_under_load(void)
{
    reshard *rs = calloc(1, sizeof *rs);
    reshard_worker_arg wa[RESHARD_THREADS];
    pthread_t th[RESHARD_THREADS];
    struct sluice_limiter_stats st;
    char prefix[64], tag[16], cmd[1200], log[256];
    const char *tmp = getenv("SLUICE_TEST_TMP");
    int shard[3] = {0}, i, k, rc, rank;
    long total = 0;
    int64_t t0, t1, end;
    double bound;
    sluice_error err;
    size_t src = 0, dst = 1;
    unsigned slot = 0, s;
    live lv;

    CU_ASSERT_PTR_NOT_NULL_FATAL(rs);
    if (live_open(&lv)) {
        free(rs);
        return;
    }
    tu_fresh_prefix(prefix, sizeof prefix, "te");
    /* A hash tag in one of the first 1000 slots of the source: redis-cli
     * moves a node's slots in ascending order. */
    for (i = 0; i < 100000; i++) {
        snprintf(tag, sizeof tag, "rs%d", i);
        snprintf(rs->keys[0], sizeof rs->keys[0], "{%s}:/a", tag);
        slot = key_slot(prefix, rs->keys[0]);
        if (lv.map->owner[slot] != src)
            continue;
        for (rank = 0, s = 0; s < slot; s++)
            rank += lv.map->owner[s] == src;
        if (rank < 1000)
            break;
    }
    snprintf(rs->keys[1], sizeof rs->keys[1], "{%s}:/b", tag);
    for (k = 2; k < RESHARD_KEYS; k++)
        snprintf(rs->keys[k], sizeof rs->keys[k], "{rsk%d}:/v1/x", k);
    for (k = 0; k < RESHARD_KEYS; k++)
        shard[live_owner(&lv, prefix, rs->keys[k])]++;
    CU_ASSERT(shard[0] && shard[1] && shard[2]);
    for (i = 0; i < RESHARD_FILL; i++)
        redisAppendCommand(lv.node[src], "SET %s:{%s}:fill%d x EX 300", prefix, tag, i);
    for (i = 0; i < RESHARD_FILL; i++) {
        redisReply *r = NULL;

        if (redisGetReply(lv.node[src], (void **)&r) != REDIS_OK || !r ||
            r->type == REDIS_REPLY_ERROR) {
            CU_FAIL("could not fill the slot");
            break;
        }
        freeReplyObject(r);
    }
    /* redis-cli refuses to reshard until every node agrees on the slots
     * (earlier tests moved one by hand). */
    snprintf(cmd, sizeof cmd, "redis-cli --cluster check 127.0.0.1:%d >/dev/null 2>&1",
             lv.map->nodes[src].port);
    end = tu_now_ms() + 10000;
    while (run_cmd(cmd) != 0 && tu_now_ms() < end)
        usleep(200000);

    rs->l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 2000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rs->l);
    t0 = tu_now_ms();
    for (i = 0; i < RESHARD_THREADS; i++) {
        wa[i].rs = rs;
        wa[i].first = i * RESHARD_KEYS / RESHARD_THREADS;
        pthread_create(&th[i], NULL, reshard_worker, &wa[i]);
    }
    usleep(300000);
    snprintf(log, sizeof log, "%.200s/reshard.log", tmp ? tmp : "/tmp");
    snprintf(cmd, sizeof cmd,
             "timeout 60 redis-cli --cluster reshard 127.0.0.1:%d --cluster-from %s "
             "--cluster-to %s --cluster-slots %d --cluster-yes >%.300s 2>&1",
             lv.map->nodes[src].port, lv.id[src], lv.id[dst], RESHARD_SLOTS, log);
    rc = run_cmd(cmd);
    if (rc)
        fprintf(stderr, "redis-cli --cluster reshard failed: see %s\n", log);
    CU_ASSERT_EQUAL(rc, 0);
    usleep(500000);   /* decisions on the stale map: MOVED */
    atomic_store(&rs->stop, 1);
    for (i = 0; i < RESHARD_THREADS; i++)
        pthread_join(th[i], NULL);
    t1 = tu_now_ms();
    sluice_limiter_stats(rs->l, &st);

    CU_ASSERT_EQUAL(slot_owner_port(lv.node[dst], slot), lv.map->nodes[dst].port);
    CU_ASSERT_EQUAL(atomic_load(&rs->errors), 0);
    /* No fallback at all: every state a slot passes through in a reshard
     * answers with MOVED, ASK or TRYAGAIN, which a decision follows within
     * SL_CLUSTER_MAX_REDIRECTS (TRYAGAIN, then ASK at most), and no node
     * fails; only a decision past its 2 s deadline could fall back, and
     * none waits that long on loopback. */
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT_EQUAL(st.cluster_node_fallbacks, 0);
    CU_ASSERT(st.cluster_moved > 0);
    CU_ASSERT(st.cluster_ask > 0);
    bound = RESHARD_BURST + RESHARD_RATE * (double)(t1 - t0) / 1000;
    for (k = 0; k < RESHARD_KEYS; k++) {
        long a = atomic_load(&rs->allowed[k]);

        total += a;
        if (a > bound || a < RESHARD_BURST + RESHARD_RATE * (double)(t1 - t0) / 2000)
            fprintf(stderr, "key %s: %ld admitted in %lld ms (bound %.1f)\n", rs->keys[k], a,
                    (long long)(t1 - t0), bound);
        CU_ASSERT(a <= bound);
        /* Redis kept deciding all along (FAIL_CLOSED admits nothing). */
        CU_ASSERT(a >= RESHARD_BURST + RESHARD_RATE * (double)(t1 - t0) / 2000);
    }
    CU_ASSERT_EQUAL((long)st.allowed, total);
    if (st.fallbacks || !st.cluster_moved || !st.cluster_ask)
        fprintf(stderr, "reshard: %lld ms, fallbacks %llu, moved %llu, ask %llu, tryagain %llu\n",
                (long long)(t1 - t0), (unsigned long long)st.fallbacks,
                (unsigned long long)st.cluster_moved, (unsigned long long)st.cluster_ask,
                (unsigned long long)st.cluster_tryagain);
    sluice_limiter_free(rs->l);
    live_close(&lv);
    free(rs);
}

/* --- (h) no decision waits for the slot map --------------------------------- */

#define NOWAIT_THREADS 4
#define NOWAIT_KEYS 6
#define NOWAIT_FETCH_MS 2000     /* redis_timeout_ms: a background fetch's bound too */
#define NOWAIT_MAX_MS 500

/* A seed of the tests' own: answers each connection's CLUSTER SLOTS with
 * `reply` and closes it. */
typedef struct fake_seed {
    int fd;
    char reply[8192];
    size_t len;
    _Atomic int stop;
} fake_seed;

static void *fake_seed_main(void *arg)
{
    fake_seed *fs = arg;

    while (!atomic_load(&fs->stop)) {
        struct pollfd pl = {fs->fd, POLLIN, 0};
        char buf[512];
        int c;

        if (poll(&pl, 1, 50) != 1 || (c = accept(fs->fd, NULL, NULL)) < 0)
            continue;
        pl.fd = c;
        if (poll(&pl, 1, 2000) == 1 && read(c, buf, sizeof buf) > 0)
            tu_write_all(c, fs->reply, fs->len);
        close(c);
    }
    return NULL;
}

/* CLUSTER SLOTS as RESP for owner_port[slot] (0: no owner). */
static size_t slots_resp(const int *owner_port, char *out, size_t cap)
{
    size_t ranges = 0, pass, len = 0;
    unsigned s, start;

    for (pass = 0; pass < 2; pass++) {
        if (pass == 1)
            len = (size_t)snprintf(out, cap, "*%zu\r\n", ranges);
        for (s = 0; s < SL_CLUSTER_SLOTS; s = start) {
            for (start = s + 1; start < SL_CLUSTER_SLOTS && owner_port[start] == owner_port[s];)
                start++;
            if (!owner_port[s])
                continue;
            if (pass == 0)
                ranges++;
            else if (len < cap)
                len += (size_t)snprintf(out + len, cap - len,
                                        "*3\r\n:%u\r\n:%u\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
                                        s, start - 1, owner_port[s]);
        }
    }
    return len < cap ? len : 0;
}

typedef struct nowait {
    sluice_limiter *l;
    char keys[NOWAIT_KEYS][32];
    _Atomic int stop;
    _Atomic long decisions, errors;
    _Atomic int64_t max_ms;
} nowait;

static void *nowait_worker(void *arg)
{
    nowait *nw = arg;
    sluice_limit lim = {1000000, 1000, 1000000};
    sluice_limit_result r;
    int i;

    for (i = 0; !atomic_load(&nw->stop); i++) {
        int64_t t0 = tu_now_ms(), dt;

        if (sluice_limiter_check(nw->l, nw->keys[i % NOWAIT_KEYS], &lim, 1, &r) != 0 ||
            !r.allowed || r.remaining < 0)
            atomic_fetch_add(&nw->errors, 1);
        dt = tu_now_ms() - t0;
        if (dt > atomic_load(&nw->max_ms))
            atomic_store(&nw->max_ms, dt);
        atomic_fetch_add(&nw->decisions, 1);
        usleep(1000);
    }
    return NULL;
}

/* The refresher stuck for NOWAIT_FETCH_MS on a node that accepts and never
 * answers (first in its list: a seed of the tests' own put it in the map)
 * holds up no decision: keys on the healthy primaries are decided by Redis
 * in far less, a key whose slot has no owner goes to the fail mode at
 * once, and a MOVED is followed at once, all while the refresh it asked
 * for has not come back.  Once the stuck fetch gives up, the next node
 * gives the real map. */
static void test_cluster_limiter_refresh_never_waited_for(void)
{
    sluice_limit lim = {1000000, 1000, 1000000};
    struct sluice_limiter_stats st;
    fake_seed *fs = calloc(1, sizeof *fs);
    nowait *nw = calloc(1, sizeof *nw);
    int *claim = calloc(SL_CLUSTER_SLOTS, sizeof *claim);
    pthread_t th[NOWAIT_THREADS], seed_th;
    char prefix[64], ukey[32], wkey[32], url[64];
    int hang_fd, hang_port, seed_port, i, k, rc;
    unsigned s, uslot = 0, wslot = 0;
    int64_t t0, dt, end;
    sluice_limit_result r;
    sluice_limiter_opts o;
    sluice_error err;
    live lv;

    CU_ASSERT_FATAL(fs && nw && claim);
    if (live_open(&lv)) {
        free(fs), free(nw), free(claim);
        return;
    }
    tu_fresh_prefix(prefix, sizeof prefix, "th");
    /* A key whose slot the fake map leaves without an owner, one it gives
     * the wrong primary, and healthy keys; none in slots 0..99, which it
     * gives the node that never answers. */
    for (i = 0; !wslot; i++) {
        snprintf(wkey, sizeof wkey, "{nw%d}:/x", i);
        s = key_slot(prefix, wkey);
        if (s < 100)
            continue;
        if (!uslot) {
            uslot = s;
            snprintf(ukey, sizeof ukey, "%s", wkey);
        } else if (s != uslot) {
            wslot = s;
        }
    }
    for (k = 0; k < NOWAIT_KEYS; i++) {
        snprintf(nw->keys[k], sizeof nw->keys[k], "{nw%d}:/x", i);
        s = key_slot(prefix, nw->keys[k]);
        if (s >= 100 && s != uslot && s != wslot)
            k++;
    }
    hang_fd = tu_listen(16, &hang_port);
    fs->fd = tu_listen(16, &seed_port);
    CU_ASSERT_FATAL(hang_fd >= 0 && fs->fd >= 0);
    for (s = 0; s < SL_CLUSTER_SLOTS; s++)
        claim[s] = s < 100 ? hang_port : lv.map->nodes[lv.map->owner[s]].port;
    claim[uslot] = 0;
    claim[wslot] = lv.map->nodes[(lv.map->owner[wslot] + 1) % 3].port;
    fs->len = slots_resp(claim, fs->reply, sizeof fs->reply);
    CU_ASSERT_FATAL(fs->len > 0);
    pthread_create(&seed_th, NULL, fake_seed_main, fs);

    snprintf(url, sizeof url, "redis+cluster://127.0.0.1:%d", seed_port);
    sluice_limiter_opts_init(&o);
    o.prefix = prefix;
    o.fail_mode = SLUICE_FAIL_CLOSED;
    o.redis_timeout_ms = NOWAIT_FETCH_MS;
    nw->l = sluice_limiter_new(url, &o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(nw->l);
    sluice_limiter_stats(nw->l, &st);
    CU_ASSERT_EQUAL(st.cluster_nodes, 4);
    for (k = 0; k < NOWAIT_KEYS; k++)   /* connected to every healthy primary */
        CU_ASSERT_EQUAL(sluice_limiter_check(nw->l, nw->keys[k], &lim, 1, &r), 0);
    for (i = 0; i < NOWAIT_THREADS; i++)
        pthread_create(&th[i], NULL, nowait_worker, nw);
    usleep(100000);

    t0 = tu_now_ms();   /* no owner: the fail mode, and a refresh asked for */
    CU_ASSERT_EQUAL(sluice_limiter_check(nw->l, ukey, &lim, 1, &r), SLUICE_ELIMITER);
    dt = tu_now_ms() - t0;
    CU_ASSERT(dt < NOWAIT_MAX_MS);
    usleep(100000);     /* the refresher is on the silent node now */
    t0 = tu_now_ms();   /* the wrong primary: MOVED, followed at once */
    CU_ASSERT_EQUAL(sluice_limiter_check(nw->l, wkey, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    dt = tu_now_ms() - t0;
    CU_ASSERT(dt < NOWAIT_MAX_MS);
    usleep(800000);
    atomic_store(&nw->stop, 1);
    for (i = 0; i < NOWAIT_THREADS; i++)
        pthread_join(th[i], NULL);
    sluice_limiter_stats(nw->l, &st);
    CU_ASSERT_EQUAL(st.cluster_refreshes, 1);   /* the refresh asked for is still stuck */
    CU_ASSERT_EQUAL(st.cluster_moved, 1);
    CU_ASSERT_EQUAL(st.fallbacks, 1);
    CU_ASSERT_EQUAL(atomic_load(&nw->errors), 0);
    CU_ASSERT(atomic_load(&nw->decisions) > 100);
    /* A decision that waited for the refresh would have taken until it
     * gave up, NOWAIT_FETCH_MS after it began. */
    CU_ASSERT(atomic_load(&nw->max_ms) < NOWAIT_MAX_MS);
    if (atomic_load(&nw->max_ms) >= NOWAIT_MAX_MS)
        fprintf(stderr, "slowest decision %lld ms\n", (long long)atomic_load(&nw->max_ms));

    end = tu_now_ms() + 3 * NOWAIT_FETCH_MS;
    do {
        usleep(50000);
        sluice_limiter_stats(nw->l, &st);
    } while (st.cluster_refreshes < 2 && tu_now_ms() < end);
    CU_ASSERT(st.cluster_refreshes >= 2);
    CU_ASSERT_EQUAL(st.cluster_nodes, 3);   /* the real map */
    rc = sluice_limiter_check(nw->l, ukey, &lim, 1, &r);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    /* The MOVED asked for another refresh while that one was stuck.  The
     * silent node is in the map no more: asked after the primaries that
     * are, it delays that refresh no longer. */
    t0 = tu_now_ms();
    end = t0 + 3 * NOWAIT_FETCH_MS;
    while (st.cluster_refreshes < 3 && tu_now_ms() < end) {
        usleep(10000);
        sluice_limiter_stats(nw->l, &st);
    }
    dt = tu_now_ms() - t0;
    CU_ASSERT_EQUAL(st.cluster_refreshes, 3);
    CU_ASSERT(dt < NOWAIT_FETCH_MS / 2);
    if (dt >= NOWAIT_FETCH_MS / 2)
        fprintf(stderr, "the next refresh took %lld ms\n", (long long)dt);
    close(hang_fd);   /* a fetch stuck on it would hold up sluice_limiter_free */
    sluice_limiter_free(nw->l);
    atomic_store(&fs->stop, 1);
    pthread_join(seed_th, NULL);
    close(fs->fd);
    live_close(&lv);
    free(fs), free(nw), free(claim);
}

/* --- (f) CLUSTER FAILOVER on a replica ------------------------------------------ */

static redisContext *connect_port(int port)
{
    char url[64];

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    return sl_redis_connect_url(url, 2000, NULL);
}

/* The port of a replica of primary i that is not failed, or 0. */
static int live_replica(const live *lv, size_t i)
{
    redisReply *r = redisCommand(lv->node[i], "CLUSTER REPLICAS %s", lv->id[i]);
    char addr[128], flags[128];
    int port = 0;
    size_t j;

    for (j = 0; r && r->type == REDIS_REPLY_ARRAY && j < r->elements && !port; j++) {
        const char *colon;

        if (r->element[j]->type != REDIS_REPLY_STRING ||
            sscanf(r->element[j]->str, "%*s %127s %127s", addr, flags) != 2 ||
            strstr(flags, "fail") || !(colon = strchr(addr, ':')))
            continue;
        port = (int)strtol(colon + 1, NULL, 10);
    }
    if (r)
        freeReplyObject(r);
    return port;
}

/* INFO's role:master or role:slave of c is `role`. */
static int has_role(redisContext *c, const char *role)
{
    char v[32];

    return info_field(c, "INFO replication", "role:", v, sizeof v) && strcmp(v, role) == 0;
}

/* The node id of c into id[48]; 0, or -1. */
static int node_id(redisContext *c, char *id)
{
    redisReply *r = redisCommand(c, "CLUSTER MYID");
    int ok = r && r->type == REDIS_REPLY_STRING;

    if (ok)
        snprintf(id, 48, "%s", r->str);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* CLUSTER NODES on primary p names node r as its replica. */
static int knows_replica(redisContext *p, redisContext *r)
{
    char pid[48], rid[48], nid[64], flags[128], master[64], *line, *save = NULL;
    redisReply *rep;
    int known = 0;

    if (node_id(p, pid) || node_id(r, rid) || !(rep = redisCommand(p, "CLUSTER NODES")))
        return 0;
    for (line = rep->type == REDIS_REPLY_STRING ? strtok_r(rep->str, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save))
        if (sscanf(line, "%63s %*s %127s %63s", nid, flags, master) == 3 &&
            strcmp(nid, rid) == 0)
            known = strstr(flags, "slave") && !strstr(flags, "fail") && strcmp(master, pid) == 0;
    freeReplyObject(rep);
    return known;
}

/* CLUSTER FAILOVER on the replica `to` (port to_port) of the primary `from`,
 * and waits until every node the limiter may ask for the map (the nodes
 * of lv, `to`) names `to` for `slot` and the cluster is ok.  0, or -1. */
static int failover_to(const live *lv, redisContext *to, int to_port, redisContext *from,
                       unsigned slot)
{
    int64_t end = tu_now_ms() + 10000;
    char v[32];

    /* A replica that has not synced cannot take over, and its primary
     * ignores the request of a node it does not know as its replica yet
     * (the manual failover then times out). */
    while (!(info_field(to, "INFO replication", "master_link_status:", v, sizeof v) &&
             strcmp(v, "up") == 0 && knows_replica(from, to)) && tu_now_ms() < end)
        usleep(50000);
    must(to, "CLUSTER FAILOVER", redisCommand(to, "CLUSTER FAILOVER"));
    end = tu_now_ms() + 15000;
    while (tu_now_ms() < end) {
        int agreed = slot_owner_port(to, slot) == to_port;
        size_t i;

        for (i = 0; i < 3 && agreed; i++)
            agreed = slot_owner_port(lv->node[i], slot) == to_port;
        if (agreed && has_role(to, "master") && has_role(from, "slave") && cluster_ok(to))
            return 0;
        usleep(50000);
    }
    fprintf(stderr, "failover to %d: master %d, old one a replica %d, cluster ok %d, owners %d %d "
            "%d %d\n", to_port, has_role(to, "master"), has_role(from, "slave"), cluster_ok(to),
            slot_owner_port(to, slot), slot_owner_port(lv->node[0], slot),
            slot_owner_port(lv->node[1], slot), slot_owner_port(lv->node[2], slot));
    return -1;
}

/* The decisions node 127.0.0.1:port carried, or -1 when l never met it. */
static long node_decisions(sluice_limiter *l, int port)
{
    struct sluice_limiter_node_stats ns[8];
    size_t nn = sluice_limiter_cluster_nodes(l, ns, 8), j;
    char addr[32];

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    for (j = 0; j < nn && j < 8; j++)
        if (strcmp(ns[j].addr, addr) == 0)
            return (long)ns[j].decisions;
    return -1;
}

/* Two clean failovers (CLUSTER FAILOVER on a replica), there and back:
 * burst 5, two admitted on the primary, one on the promoted replica, two
 * on the old primary promoted again, the sixth denied: the key's TAT
 * followed each promotion.  Each stale map costs one MOVED from the
 * demoted node.  The limiter had loaded its script on the old primary; its
 * cache, flushed right after it is promoted again, costs a NOSCRIPT and a
 * SCRIPT LOAD there.  Nothing goes to the fail mode. */
static void test_cluster_limiter_replica_failover(void)
{
    const char *key = "{failover}:/v1/x";
    sluice_limit lim = {1, 600000, 5};
    struct sluice_limiter_stats st;
    sluice_limit_result r;
    char prefix[64], sha[48];
    redisContext *rc = NULL;
    sluice_limiter *l;
    sluice_error err;
    redisReply *rep;
    int pport, rport, i;
    unsigned slot;
    size_t p;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "tf");
    p = live_owner(&lv, prefix, key);
    pport = lv.map->nodes[p].port;
    slot = key_slot(prefix, key);
    rport = live_replica(&lv, p);
    CU_ASSERT_FATAL(rport > 0);
    rc = connect_port(rport);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rc);
    rep = redisCommand(lv.node[p], "SCRIPT LOAD %s", sl_redis_script);
    CU_ASSERT_FATAL(rep && rep->type == REDIS_REPLY_STRING);
    snprintf(sha, sizeof sha, "%s", rep->str);
    freeReplyObject(rep);

    l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 3000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    CU_ASSERT_FATAL(failover_to(&lv, rc, rport, lv.node[p], slot) == 0);
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 1);
    CU_ASSERT_EQUAL(node_decisions(l, rport), 1);

    CU_ASSERT_FATAL(failover_to(&lv, lv.node[p], pport, rc, slot) == 0);
    must(lv.node[p], "SCRIPT FLUSH", redisCommand(lv.node[p], "SCRIPT FLUSH"));
    CU_ASSERT_EQUAL(script_exists(lv.node[p], sha), 0);
    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    CU_ASSERT_EQUAL(sluice_limiter_check(l, key, &lim, 1, &r), 0);
    CU_ASSERT_EQUAL(r.allowed, 0);
    /* Two on the first primary, then the MOVED answer the demoted one gave
     * and the last three. */
    CU_ASSERT_EQUAL(node_decisions(l, pport), 6);
    CU_ASSERT_EQUAL(node_decisions(l, rport), 2);   /* and its own MOVED */
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(st.cluster_moved, 2);
    CU_ASSERT_EQUAL(st.fallbacks, 0);
    CU_ASSERT_EQUAL(st.redis_errors, 0);
    CU_ASSERT_EQUAL(script_exists(lv.node[p], sha), 1);
    sluice_limiter_free(l);
    redisFree(rc);
    live_close(&lv);
}

/* --- (d) a primary killed ------------------------------------------------------ */

#define KILL_KEYS 3
#define KILL_TIMEOUT_MS 100
#define KILL_SLACK_MS 400

typedef struct killrun {
    sluice_limiter *l;
    char keys[KILL_KEYS][32];
    _Atomic int stop;
    _Atomic int64_t killed_ms;        /* 0 until the kill */
    /* the worker's: */
    int64_t max_ms, first_fb_ms, last_fb_ms;
    long fallbacks_before_kill, redis_after[KILL_KEYS];
    long errors;
} killrun;

static void *kill_worker(void *arg)
{
    killrun *k = arg;
    sluice_limit lim = {100000, 1000, 100000};
    sluice_limit_result r;
    int i;

    while (!atomic_load(&k->stop)) {
        for (i = 0; i < KILL_KEYS; i++) {
            int64_t t0 = tu_now_ms(), dt;
            int rc = sluice_limiter_check(k->l, k->keys[i], &lim, 1, &r);

            dt = tu_now_ms() - t0;
            if (dt > k->max_ms)
                k->max_ms = dt;
            if (rc) {
                k->errors++;
            } else if (r.remaining < 0) {   /* FAIL_OPEN answered */
                if (!atomic_load(&k->killed_ms))
                    k->fallbacks_before_kill++;
                if (!k->first_fb_ms)
                    k->first_fb_ms = t0;
                k->last_fb_ms = t0 + dt;
                memset(k->redis_after, 0, sizeof k->redis_after);
            } else {
                k->redis_after[i]++;
            }
        }
        usleep(2000);
    }
    return NULL;
}

/* Restarts the killed node in its tests/cluster.sh directory (it rejoins as
 * a replica) and records its pid for tests/cluster.sh stop. */
static void restart_node(int port)
{
    const char *tmp = getenv("SLUICE_TEST_TMP");
    char dir[256], portarg[16], pids[256], log[300];
    pid_t pid;
    FILE *f;

    if (!tmp)
        return;
    snprintf(dir, sizeof dir, "%s/cluster/node-%d", tmp, port);
    snprintf(pids, sizeof pids, "%s/cluster/cluster.pids", tmp);
    snprintf(log, sizeof log, "%s/log.restarted", dir);
    snprintf(portarg, sizeof portarg, "%d", port);
    pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (fd >= 0)
            dup2(fd, 1), dup2(fd, 2);
        setpgid(0, 0);
        execlp("timeout", "timeout", "3600", "redis-server", "--port", portarg, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
               "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
               "--repl-diskless-sync-delay", "0", "--cluster-config-file", "nodes.conf",
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    if (pid > 0 && (f = fopen(pids, "a"))) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
}

/* kill -9 of a primary with a replica: no decision waits past
 * redis_timeout_ms (plus slack), fail-mode answers only between the kill
 * and a few seconds after the replica took over (cluster_state:ok), and
 * Redis decides every key again after that. */
static void test_cluster_limiter_primary_killed(void)
{
    char prefix[64], pidtxt[32], url[128];
    struct sluice_limiter_stats st;
    killrun *k = calloc(1, sizeof *k);
    size_t victim, survivor, i, found = 0;
    int64_t ok_ms = 0, end;
    sluice_error err;
    pthread_t th;
    int victim_port;
    live lv;

    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    if (live_open(&lv)) {
        free(k);
        return;
    }
    tu_fresh_prefix(prefix, sizeof prefix, "td");
    for (i = 0; i < 1000 && found < 7; i++) {   /* one key per shard */
        char key[32];
        size_t own;

        snprintf(key, sizeof key, "{kill%zu}:/x", i);
        own = live_owner(&lv, prefix, key);
        if (!(found & (1u << own))) {
            found |= 1u << own;
            snprintf(k->keys[own], sizeof k->keys[own], "%s", key);
        }
    }
    CU_ASSERT_EQUAL_FATAL(found, 7);
    victim = 0;
    survivor = 1;
    victim_port = lv.map->nodes[victim].port;
    /* Its replica must have synced, or it could not take over. */
    end = tu_now_ms() + 10000;
    while (!info_field(lv.node[victim], "INFO replication", "state=online", pidtxt, 1) &&
           tu_now_ms() < end)
        usleep(50000);
    CU_ASSERT_FATAL(info_field(lv.node[victim], "INFO server", "process_id:", pidtxt,
                               sizeof pidtxt));
    k->l = cluster_limiter(prefix, SLUICE_FAIL_OPEN, KILL_TIMEOUT_MS, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k->l);
    pthread_create(&th, NULL, kill_worker, k);
    usleep(300000);
    atomic_store(&k->killed_ms, tu_now_ms());
    CU_ASSERT_EQUAL(kill((pid_t)atol(pidtxt), SIGKILL), 0);
    redisFree(lv.node[victim]);
    lv.node[victim] = NULL;

    /* The replica takes over: the slot map names another primary. */
    end = tu_now_ms() + 20000;
    while (!ok_ms && tu_now_ms() < end) {
        sl_slot_map *m = calloc(1, sizeof *m);
        redisReply *r = redisCommand(lv.node[survivor], "CLUSTER SLOTS");
        unsigned slot = key_slot(prefix, k->keys[victim]);

        if (m && r && sl_cluster_parse_slots(r, "127.0.0.1", m, &err) == 0 &&
            m->owner[slot] < m->nnodes && m->nodes[m->owner[slot]].port != victim_port &&
            cluster_ok(lv.node[survivor]))
            ok_ms = tu_now_ms();
        if (r)
            freeReplyObject(r);
        free(m);
        usleep(50000);
    }
    CU_ASSERT(ok_ms != 0);
    usleep(4000000);
    atomic_store(&k->stop, 1);
    pthread_join(th, NULL);
    sluice_limiter_stats(k->l, &st);

    CU_ASSERT(k->max_ms <= KILL_TIMEOUT_MS + KILL_SLACK_MS);
    CU_ASSERT_EQUAL(k->errors, 0);
    CU_ASSERT_EQUAL(k->fallbacks_before_kill, 0);
    CU_ASSERT(k->first_fb_ms >= atomic_load(&k->killed_ms));   /* the kill was noticed */
    CU_ASSERT(st.cluster_node_fallbacks > 0);
    CU_ASSERT(st.fallbacks == st.cluster_node_fallbacks);
    CU_ASSERT(ok_ms && k->last_fb_ms <= ok_ms + 3000);
    for (i = 0; i < KILL_KEYS; i++)
        CU_ASSERT(k->redis_after[i] > 0);       /* Redis decides again */
    CU_ASSERT(st.cluster_refreshes >= 2);
    {   /* the dead primary's own fallbacks; the new map names it no more */
        struct sluice_limiter_node_stats ns[8];
        size_t nn = sluice_limiter_cluster_nodes(k->l, ns, 8), j, seen = 0;
        char addr[32];

        snprintf(addr, sizeof addr, "127.0.0.1:%d", victim_port);
        for (j = 0; j < nn && j < 8; j++)
            if (strcmp(ns[j].addr, addr) == 0) {
                seen = 1;
                CU_ASSERT(ns[j].fallbacks > 0);
                CU_ASSERT_EQUAL(ns[j].primary, 0);
            }
        CU_ASSERT(seen);
    }
    if (k->max_ms > KILL_TIMEOUT_MS + KILL_SLACK_MS || k->last_fb_ms > ok_ms + 3000)
        fprintf(stderr, "max %lld ms, last fallback %lld ms after cluster_state:ok\n",
                (long long)k->max_ms, (long long)(k->last_fb_ms - ok_ms));
    sluice_limiter_free(k->l);

    /* Leave a whole cluster behind: the old primary rejoins as a replica. */
    restart_node(victim_port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", victim_port);
    end = tu_now_ms() + 15000;
    while (tu_now_ms() < end) {
        redisContext *c = sl_redis_connect_url(url, 500, NULL);
        int ok = c && cluster_ok(c);

        if (c)
            redisFree(c);
        if (ok)
            break;
        usleep(100000);
    }
    live_close(&lv);
    free(k);
}

/* --- (g) a shard lost without a replica: partial coverage -------------------- */

#define OUTAGE_KEYS 6

/* Kills the redis-server answering on c (kill -9) and waits until its port
 * refuses connections.  0, or -1 after failing the test. */
static int kill_node(redisContext *c, int port)
{
    char pidtxt[32];
    int64_t end = tu_now_ms() + 5000;

    if (!info_field(c, "INFO server", "process_id:", pidtxt, sizeof pidtxt) ||
        kill((pid_t)strtol(pidtxt, NULL, 10), SIGKILL) != 0) {
        CU_FAIL("cannot kill a cluster node");
        return -1;
    }
    while (tu_now_ms() < end) {
        redisContext *t = connect_port(port);

        if (!t)
            return 0;
        redisFree(t);
        usleep(20000);
    }
    CU_FAIL("a killed cluster node still answers");
    return -1;
}

/* CONFIG SET on every node CLUSTER NODES on c names and is not failed. */
static void config_set_all(redisContext *c, const char *name, const char *value)
{
    redisReply *r = redisCommand(c, "CLUSTER NODES");
    char *line, *save = NULL, addr[128], flags[128];

    CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_STRING);
    for (line = strtok_r(r->str, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *colon;
        redisContext *n;

        if (sscanf(line, "%*s %127s %127s", addr, flags) != 2 || strstr(flags, "fail") ||
            !(colon = strchr(addr, ':')))
            continue;
        n = connect_port((int)strtol(colon + 1, NULL, 10));
        CU_ASSERT_PTR_NOT_NULL(n);
        if (n) {
            must(n, "CONFIG SET", redisCommand(n, "CONFIG SET %s %s", name, value));
            redisFree(n);
        }
    }
    freeReplyObject(r);
}

/* Node `id` is flagged fail (or fail?) in c's CLUSTER NODES. */
static int node_flagged_fail(redisContext *c, const char *id)
{
    redisReply *r = redisCommand(c, "CLUSTER NODES");
    char *line, *save = NULL, nid[64], flags[128];
    int failed = 0;

    for (line = r && r->type == REDIS_REPLY_STRING ? strtok_r(r->str, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save))
        if (sscanf(line, "%63s %*s %127s", nid, flags) == 2 && strcmp(nid, id) == 0)
            failed = strstr(flags, "fail") != NULL;
    if (!r || r->type != REDIS_REPLY_STRING)
        fprintf(stderr, "CLUSTER NODES: %s\n", r ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    return failed;
}

/* A primary without a replica killed while the cluster runs with
 * cluster-require-full-coverage no: the other shards keep serving, so
 * keys there are decided by Redis throughout (burst 5 of many tries, no
 * fallback), while each decision for the dead shard's key goes to the fail
 * mode and is counted on that node alone.  Last: it leaves a shard down. */
static void test_cluster_limiter_partial_outage(void)
{
    sluice_limit lim = {1, 600000, 5};
    struct sluice_limiter_stats st;
    struct sluice_limiter_node_stats ns[8];
    sluice_limit_result r;
    char prefix[64], keys[OUTAGE_KEYS][32], addr[32];
    long allowed[OUTAGE_KEYS] = {0}, healthy_errors = 0, dead_tries = 0, dead_errors = 0;
    size_t victim = 2, owner[OUTAGE_KEYS], found = 0, nn, j;
    int victim_port, rport, i, k, seen = 0;
    int64_t flagged = 0, end;
    sluice_limiter *l;
    sluice_error err;
    live lv;

    if (live_open(&lv))
        return;
    tu_fresh_prefix(prefix, sizeof prefix, "tg");
    for (i = 0, k = 0; k < OUTAGE_KEYS && i < 1000; i++) {   /* two keys per shard */
        char key[32];
        size_t own;

        snprintf(key, sizeof key, "{out%d}:/x", i);
        own = live_owner(&lv, prefix, key);
        for (j = 0, found = 0; j < (size_t)k; j++)
            found += owner[j] == own;
        if (found < 2) {
            owner[k] = own;
            snprintf(keys[k], sizeof keys[k], "%s", key);
            k++;
        }
    }
    CU_ASSERT_EQUAL_FATAL(k, OUTAGE_KEYS);
    victim_port = lv.map->nodes[victim].port;
    config_set_all(lv.node[0], "cluster-require-full-coverage", "no");
    /* The shard loses its replicas first, so nothing can take over. */
    while ((rport = live_replica(&lv, victim)) > 0) {
        redisContext *rc = connect_port(rport);

        CU_ASSERT_PTR_NOT_NULL_FATAL(rc);
        i = kill_node(rc, rport);
        redisFree(rc);
        if (i)
            break;
        /* It must not be named again: wait until the primary sees it fail. */
        end = tu_now_ms() + 10000;
        while (live_replica(&lv, victim) == rport && tu_now_ms() < end)
            usleep(50000);
    }

    l = cluster_limiter(prefix, SLUICE_FAIL_CLOSED, 1000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    for (k = 0; k < OUTAGE_KEYS; k++) {   /* every shard answers, 1 of 5 used */
        CU_ASSERT_EQUAL(sluice_limiter_check(l, keys[k], &lim, 1, &r), 0);
        CU_ASSERT_EQUAL(r.allowed, 1);
    }
    if (kill_node(lv.node[victim], victim_port)) {
        sluice_limiter_free(l);
        live_close(&lv);
        return;
    }
    redisFree(lv.node[victim]);
    lv.node[victim] = NULL;
    /* From the kill until a second after the others flagged it failed. */
    end = tu_now_ms() + 15000;
    while (tu_now_ms() < end && (!flagged || tu_now_ms() < flagged + 1000)) {
        for (k = 0; k < OUTAGE_KEYS; k++) {
            int rc = sluice_limiter_check(l, keys[k], &lim, 1, &r);

            if (owner[k] == victim) {
                dead_tries++;
                dead_errors += rc == SLUICE_ELIMITER;
            } else if (rc) {
                healthy_errors++;
            } else {
                allowed[k] += r.allowed;
            }
        }
        if (!flagged && node_flagged_fail(lv.node[(victim + 1) % 3], lv.id[victim]) &&
            node_flagged_fail(lv.node[(victim + 2) % 3], lv.id[victim]))
            flagged = tu_now_ms();
        usleep(20000);
    }
    CU_ASSERT(flagged != 0);
    if (!flagged) {
        redisReply *cn = redisCommand(lv.node[(victim + 1) % 3], "CLUSTER NODES");

        fprintf(stderr, "victim %s never flagged failed:\n%s\n", lv.id[victim],
                cn && cn->type == REDIS_REPLY_STRING ? cn->str : "(no answer)");
        if (cn)
            freeReplyObject(cn);
    }
    CU_ASSERT(cluster_ok(lv.node[(victim + 1) % 3]));
    sluice_limiter_stats(l, &st);
    CU_ASSERT_EQUAL(healthy_errors, 0);
    for (k = 0; k < OUTAGE_KEYS; k++)
        if (owner[k] != victim)
            CU_ASSERT_EQUAL(allowed[k], 4);   /* 5 in all: Redis decided every one */
    CU_ASSERT(dead_tries > 0);
    CU_ASSERT_EQUAL(dead_errors, dead_tries);
    CU_ASSERT_EQUAL(st.fallbacks, (uint64_t)dead_tries);
    CU_ASSERT_EQUAL(st.cluster_node_fallbacks, (uint64_t)dead_tries);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", victim_port);
    nn = sluice_limiter_cluster_nodes(l, ns, 8);
    for (j = 0; j < nn && j < 8; j++) {
        if (strcmp(ns[j].addr, addr) == 0) {
            seen = 1;
            CU_ASSERT_EQUAL(ns[j].fallbacks, (uint64_t)dead_tries);
        } else {
            CU_ASSERT_EQUAL(ns[j].fallbacks, 0);
        }
    }
    CU_ASSERT(seen);
    sluice_limiter_free(l);
    live_close(&lv);
}

static CU_TestInfo tests[] = {
    {"test_cluster_crc16_reference", test_cluster_crc16_reference},
    {"test_cluster_keyslot_matches_redis", test_cluster_keyslot_matches_redis},
    {"test_cluster_slots_from_a_real_node", test_cluster_slots_from_a_real_node},
    {"test_cluster_slots_malformed_refused", test_cluster_slots_malformed_refused},
    {"test_cluster_redirect_parsing", test_cluster_redirect_parsing},
    {"test_cluster_url_parsing", test_cluster_url_parsing},
    {"test_cluster_live_map_routes_every_key", test_cluster_live_map_routes_every_key},
    {"test_cluster_limiter_config_errors", test_cluster_limiter_config_errors},
    {"test_cluster_limiter_metrics_export", test_cluster_limiter_metrics_export},
    {"test_cluster_limiter_cross_slot_burst", test_cluster_limiter_cross_slot_burst},
    {"test_cluster_limiter_moved_slot", test_cluster_limiter_moved_slot},
    {"test_cluster_limiter_ask_noscript", test_cluster_limiter_ask_noscript},
    {"test_cluster_limiter_tryagain", test_cluster_limiter_tryagain},
    {"test_cluster_limiter_reshard_under_load", test_cluster_limiter_reshard_under_load},
    {"test_cluster_limiter_refresh_never_waited_for",
     test_cluster_limiter_refresh_never_waited_for},
    {"test_cluster_limiter_replica_failover", test_cluster_limiter_replica_failover},
    /* Last: it kills a primary (and restarts it as a replica). */
    {"test_cluster_limiter_primary_killed", test_cluster_limiter_primary_killed},
    /* After it: it leaves a shard down. */
    {"test_cluster_limiter_partial_outage", test_cluster_limiter_partial_outage},
    CU_TEST_INFO_NULL,
};

void suite_redis_cluster(void);
void suite_redis_cluster(void)
{
    tu_add_suite("redis_cluster", tests);
}
