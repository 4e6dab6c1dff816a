"""cffi API-mode build of libbpf_loader._libbpf against the system libbpf (>= 1.1).

Listed in setup.py's cffi_modules; lives outside the installed code paths like
pyca/cryptography's build scripts. Only the libbpf 1.1 API we call is declared.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SHIM_VERSION = re.search(r'SHIM_VERSION = "([^"]+)"',
                         (HERE.parent / "_version.py").read_text()).group(1)

CDEF_LIBBPF = """
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct ring_buffer;
enum bpf_map_type { BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF, ... };
enum libbpf_print_level { LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG };
#define LBL_BATCH_FULL ...
#define LBL_PACKED ...
#define BPF_ANY ...

uint32_t libbpf_major_version(void);
uint32_t libbpf_minor_version(void);
int libbpf_strerror(int err, char *buf, size_t size);
int libbpf_num_possible_cpus(void);

int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
                                                     const char *name);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
                                             struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

int bpf_program__fd(const struct bpf_program *prog);
const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
int bpf_link__destroy(struct bpf_link *link);

int bpf_map__fd(const struct bpf_map *map);
const char *bpf_map__name(const struct bpf_map *map);
enum bpf_map_type bpf_map__type(const struct bpf_map *map);
uint32_t bpf_map__key_size(const struct bpf_map *map);
uint32_t bpf_map__value_size(const struct bpf_map *map);
uint32_t bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, uint32_t max_entries);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);

int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);

int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);
void ring_buffer__free(struct ring_buffer *rb);

extern "Python" void _lbl_log(int level, const char *msg);
extern "Python" int _lbl_sample(void *ctx, void *data, size_t size);
"""

ffi = FFI()
ffi.cdef(CDEF_LIBBPF + (HERE / "shim.h").read_text())
ffi.set_source(
    "libbpf_loader._libbpf",
    f'#define LBL_BUILD_VERSION "{SHIM_VERSION}"\n#include <stdint.h>\n#include <stddef.h>\n'
    "struct bpf_object; struct bpf_program; struct bpf_link; struct ring_buffer;\n"
    + (HERE / "shim.h").read_text() + (HERE / "shim.c").read_text(),
    libraries=["bpf"],
    depends=[str(HERE / "shim.c"), str(HERE / "shim.h"), str(HERE.parent / "_version.py")],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
