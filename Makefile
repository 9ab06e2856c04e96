# sluice build.  `make` builds build/libsluice.so (versioned) and
# build/libsluice.a; `make check` runs the CUnit suite against a private
# mock API and redis-server; `make demo` runs the worker-threads demo.

VERSION := $(shell sed -n 's/^\#define SLUICE_VERSION_STRING "\(.*\)"/\1/p' include/sluice.h)
MAJOR   := $(shell sed -n 's/^\#define SLUICE_VERSION_MAJOR \([0-9]*\)/\1/p' include/sluice.h)
MINOR   := $(shell sed -n 's/^\#define SLUICE_VERSION_MINOR \([0-9]*\)/\1/p' include/sluice.h)

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
BUILD   ?= build

CC      ?= cc
CFLAGS  ?= -O2 -g
SAN     ?=
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -pthread -fPIC -fvisibility=hidden \
             -Iinclude -Isrc $(WARN) $(SAN) $(CFLAGS)
LDLIBS_PRIV = -lwolfssl -lhiredis -lcares -lz -lbrotlidec -lnghttp2 -pthread -lm
ALL_LDFLAGS = $(SAN) $(LDFLAGS)

SRCS    := $(wildcard src/*.c)
OBJS    := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
# Before 1.0 a minor version may change the ABI (option and stats structs
# grow), so the soname carries it: a 0.1 binary will not load 0.2.
ABI     := $(if $(filter 0,$(MAJOR)),$(MAJOR).$(MINOR),$(MAJOR))
SONAME  := libsluice.so.$(ABI)
SHLIB   := $(BUILD)/libsluice.so.$(VERSION)
STLIB   := $(BUILD)/libsluice.a

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_OBJS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%.o) $(BUILD)/tests/runner.o $(BUILD)/tests/testutil.o
RUNNER    := $(BUILD)/tests/sluice-tests
MOCKAPI   := $(BUILD)/sluice-mockapi
BENCH     := $(BUILD)/sluice-bench
EXAMPLES  := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))

.PHONY: all lib deps check test demo interop examples examples-installed man-lint man-check bench asan tsan torture fuzz install uninstall clean tools
.DELETE_ON_ERROR:

all: lib tools

lib: $(SHLIB) $(STLIB) $(BUILD)/sluice.pc

tools: $(MOCKAPI) $(if $(wildcard tools/sluice-bench.c),$(BENCH))

$(BUILD)/obj/%.o: src/%.c include/sluice.h $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(SHLIB): $(OBJS)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(ALL_LDFLAGS) -o $@ $(OBJS) $(LDLIBS_PRIV)
	ln -sf libsluice.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libsluice.so

$(STLIB): $(OBJS)
	rm -f $@
	ar rcs $@ $(OBJS)

# The .pc names the prefix, so it is written anew for every build and install.
define write_pc
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: sluice' 'Description: thread-safe blocking HTTP(S) client for multithreaded C programs' \
	  'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lsluice' \
	  'Libs.private: -lwolfssl -lhiredis -lcares -lz -lbrotlidec -lnghttp2 -pthread -lm' > $(1)
endef

$(BUILD)/sluice.pc: Makefile include/sluice.h
	@mkdir -p $(BUILD)
	$(call write_pc,$@)

# --- tools -----------------------------------------------------------------

$(MOCKAPI): $(wildcard tools/mockapi/*.c tools/mockapi/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itools/mockapi -o $@ $(wildcard tools/mockapi/*.c) $(ALL_LDFLAGS) -lwolfssl -lz -lbrotlienc -lnghttp2 -pthread

$(BENCH): tools/sluice-bench.c $(wildcard bench/*.h) $(STLIB)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STLIB) $(ALL_LDFLAGS) $(LDLIBS_PRIV) -lm

# --- tests -----------------------------------------------------------------

$(BUILD)/tests/suites.inc: $(TEST_SRCS)
	@mkdir -p $(dir $@)
	for f in $(sort $(notdir $(TEST_SRCS:.c=))); do echo "SUITE($${f#test_})"; done > $@.tmp
	cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/tests/runner.o: tests/runner.c $(BUILD)/tests/suites.inc tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(BUILD)/tests -Itests -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c tests/testutil.h include/sluice.h $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -c -o $@ $<

$(RUNNER): $(TEST_OBJS) $(STLIB)
	$(CC) -o $@ $(TEST_OBJS) $(STLIB) $(ALL_LDFLAGS) $(LDLIBS_PRIV) -lbrotlienc -lcunit -lm

deps:
	@tools/install-deps.sh --quiet

# `make check` runs every suite; SUITES="pool http1" runs some.  Before the
# suites: every public function has a man page and every page lints clean,
# and every example builds against the installed library.
check: deps
	$(MAKE) --no-print-directory lib tools examples $(RUNNER)
	tests/check-man.sh
	BUILD=$(BUILD) EX_LDFLAGS="$(SAN)" tests/check-examples.sh
	BUILD=$(BUILD) tests/run.sh $(SUITES)

# groff -man -ww -z over every page; any output fails.
man-lint:
	tests/check-man.sh --lint-only

# Every SLUICE_API function in include/sluice.h has man/man3/<name>.3.
man-check:
	tests/check-man.sh --coverage-only

# `make install PREFIX=$$tmp` and build every example with only
# pkg-config's flags and -std=c11 -Wall -Wextra -Werror.
examples-installed: lib
	BUILD=$(BUILD) EX_LDFLAGS="$(SAN)" tests/check-examples.sh

test: check

# GCC leaves float-cast-overflow out of `undefined`; option arithmetic
# ((int) of a double) is checked too.
# The HTTP/2 interop suite alone, against a private nginx (make check runs
# it too).
interop: deps
	$(MAKE) --no-print-directory lib tools $(RUNNER)
	BUILD=$(BUILD) tests/run.sh h2_interop

asan:
	$(MAKE) --no-print-directory check BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow"

tsan:
	$(MAKE) --no-print-directory check BUILD=build-tsan CFLAGS="-O1 -g" SAN="-fsanitize=thread"

# Allocation-failure injection over the request path (tests/test_torture.c),
# under the same ASan/LSan build as `make asan`; too slow for `make check`.
torture:
	SLUICE_TORTURE=1 $(MAKE) --no-print-directory check SUITES=torture BUILD=build-asan \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow"

# --- examples, demo, bench -----------------------------------------------

examples: $(EXAMPLES)

# Examples get no project defines or private headers: each file names the
# feature macros it needs, as a program using the installed library would.
EX_CFLAGS = -std=c11 -pthread -Iinclude $(WARN) $(SAN) $(CFLAGS)

$(BUILD)/examples/%: examples/%.c include/sluice.h $(STLIB)
	@mkdir -p $(dir $@)
	$(CC) $(EX_CFLAGS) -o $@ $< $(STLIB) $(ALL_LDFLAGS) $(LDLIBS_PRIV) -lm

demo: deps
	$(MAKE) --no-print-directory lib tools examples
	BUILD=$(BUILD) tools/demo.sh

bench:
	@tools/install-deps.sh --bench --quiet
	$(MAKE) --no-print-directory lib tools examples
	BUILD=$(BUILD) bench/run.sh

# Programs in bench/ link the static library (and libcurl for the peers).
$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(STLIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STLIB) $(ALL_LDFLAGS) $(LDLIBS_PRIV) \
	  $(if $(findstring curl,$*),-lcurl) -lm

# --- fuzzing (libFuzzer, clang, ASan+UBSan) ----------------------------------
# Each fuzz/fuzz_NAME.c is a target built with every library source;
# fuzz_mockapi_* also link the mock API's request parser, fuzz_*diff* the
# reference parser.  `make fuzz FUZZ_TIME=S` runs each for S seconds over
# its committed seeds in fuzz/corpus/NAME (new inputs go to build-fuzz/);
# FUZZ_SEED=N makes the mutations repeatable (0, the default: random).
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 30
FUZZ_SEED    ?= 0
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -pthread -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) \
                -Iinclude -Isrc -Itools/mockapi
FUZZ_TARGETS := $(patsubst fuzz/%.c,build-fuzz/%,$(wildcard fuzz/fuzz_*.c))
MOCK_SRCS    := $(filter-out %/main.c,$(wildcard tools/mockapi/*.c))
# The library and the mock API's parser are compiled once, instrumented for
# coverage; each target links them.
FUZZ_LIB     := build-fuzz/libsluice-fuzz.a
FUZZ_MOCK    := build-fuzz/libmockapi-fuzz.a

build-fuzz/obj/%.o: src/%.c include/sluice.h $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build-fuzz/mock/%.o: tools/mockapi/%.c $(wildcard tools/mockapi/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_LIB): $(SRCS:src/%.c=build-fuzz/obj/%.o)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_MOCK): $(MOCK_SRCS:tools/mockapi/%.c=build-fuzz/mock/%.o)
	rm -f $@ && ar rcs $@ $^

build-fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB) $(FUZZ_MOCK)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	  $(if $(findstring mockapi,$*),$(FUZZ_MOCK)) $(FUZZ_LIB) \
	  -lwolfssl -lhiredis -lcares -lz -lbrotlidec -lbrotlienc -lnghttp2 \
	  $(if $(findstring diff,$*),-lhttp_parser) -lm

fuzz:
	@tools/install-deps.sh --fuzz --quiet
	$(MAKE) --no-print-directory $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do n=$$(basename $$t); \
	  mkdir -p build-fuzz/corpus/$$n fuzz/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZ_TIME) s"; \
	  $$t -max_total_time=$(FUZZ_TIME) -seed=$(FUZZ_SEED) -print_final_stats=1 \
	    build-fuzz/corpus/$$n fuzz/corpus/$$n \
	    2>build-fuzz/$$n.log || { tail -50 build-fuzz/$$n.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units' build-fuzz/$$n.log; done

# --- install ---------------------------------------------------------------

install: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)
	install -m 644 include/sluice.h $(DESTDIR)$(INCDIR)/sluice.h
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/libsluice.so.$(VERSION)
	ln -sf libsluice.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsluice.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/libsluice.a
	$(call write_pc,$(DESTDIR)$(LIBDIR)/pkgconfig/sluice.pc)
	install -d $(DESTDIR)$(MANDIR)/man3
	install -m 644 $(wildcard man/man3/*.3) $(DESTDIR)$(MANDIR)/man3/

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/sluice.h $(DESTDIR)$(LIBDIR)/libsluice.so.$(VERSION) \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libsluice.so \
	  $(DESTDIR)$(LIBDIR)/libsluice.a $(DESTDIR)$(LIBDIR)/pkgconfig/sluice.pc \
	  $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(wildcard man/man3/*.3)))

clean:
	rm -rf build build-asan build-tsan build-fuzz
