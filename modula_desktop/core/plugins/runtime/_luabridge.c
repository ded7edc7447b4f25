/* The plugin route call without lupa's per-call machinery (see sandbox.py: Sandbox.call_route).

   A route call through lupa is a table_from of the arguments, a store into the inbox and a str() of
   route_caller: three crossings, each taking lupa's lock, checking the stack and converting values
   one by one. This module pushes the same arguments straight onto the Lua stack of the VM and calls
   the bootstrap's route_entry in one protected call, holding the GIL throughout (as str() does).

   It uses the Lua 5.4 C API exported by lupa's own lua54 extension module (resolved with dlsym from
   that module, already loaded: no second Lua in the process) and the state lupa created. Nothing of
   lupa's is changed. Relied on:
   - lupa's restricted allocator keeps {used, base_usage, limit} (size_t each) behind the allocator's
     user data; the memory limit is that limit field, as set by LuaRuntime.set_max_memory. Checked
     when an entry is made (against get_memory_used(), with the limit off).
   - LUA_REGISTRYINDEX is Lua 5.4's default (LUAI_MAXSTACK 1000000), as lupa builds its bundled Lua.
     Not checkable safely; an entry is made only once route_entry is found in the registry.
   - lupa's runtime lock (a FastRLock, found by the caller among the runtime's referents): an entry
     holds it for the whole call, as lupa's own calls do, so another thread using the runtime through
     lupa waits instead of running Lua alongside (the GIL is released inside a call: the budget hook's
     yields, host functions).
   Everything that can allocate runs inside lua_pcall, with the memory limit on; the Python values are
   checked before that, so no Python error can happen between the pushes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct lua_State lua_State;
typedef long long lua_Integer;
typedef unsigned long long lua_Unsigned;
typedef double lua_Number;
typedef intptr_t lua_KContext;
typedef int (*lua_CFunction)(lua_State *L);
typedef int (*lua_KFunction)(lua_State *L, int status, lua_KContext ctx);
typedef void *(*lua_Alloc)(void *ud, void *ptr, size_t osize, size_t nsize);
typedef struct lua_Debug lua_Debug;
typedef void (*lua_Hook)(lua_State *L, lua_Debug *ar);

#define LUA_REGISTRYINDEX (-1000000 - 1000)
#define LUA_TNIL 0
#define LUA_TBOOLEAN 1
#define LUA_TNUMBER 3
#define LUA_TTABLE 5
#define LUA_TFUNCTION 6
#define LUA_TSTRING 4
#define LUA_TUSERDATA 7
#define LUA_ERRMEM 4
#define LUA_TTHREAD 8
#define LUA_MASKCOUNT (1 << 3)
#define lua_upvalueindex(i) (LUA_REGISTRYINDEX - (i))
/* the most arguments an entry takes, and the most pairs one map may hold (waitress bounds headers
   far below this) */
#define MAX_ARGS 32
#define MAX_PAIRS 100000

typedef struct { size_t used, base_usage, limit; } MemoryStatus; /* lupa's, see above */

typedef struct {
    int (*gettop)(lua_State *);
    void (*settop)(lua_State *, int);
    int (*checkstack)(lua_State *, int);
    void (*pushnil)(lua_State *);
    void (*pushinteger)(lua_State *, lua_Integer);
    void (*pushnumber)(lua_State *, lua_Number);
    const char *(*pushlstring)(lua_State *, const char *, size_t);
    void (*pushboolean)(lua_State *, int);
    void (*pushcclosure)(lua_State *, lua_CFunction, int);
    void (*pushlightuserdata)(lua_State *, void *);
    void *(*touserdata)(lua_State *, int);
    int (*rawgeti)(lua_State *, int, lua_Integer);
    int (*getfield)(lua_State *, int, const char *);
    void (*createtable)(lua_State *, int, int);
    void (*rawset)(lua_State *, int);
    int (*type)(lua_State *, int);
    const char *(*tolstring)(lua_State *, int, size_t *);
    int (*pcallk)(lua_State *, int, int, int, lua_KContext, lua_KFunction);
    void (*callk)(lua_State *, int, int, lua_KContext, lua_KFunction);
    int (*error)(lua_State *);
    int (*ref)(lua_State *, int);
    void (*unref)(lua_State *, int, int);
    lua_Alloc (*getallocf)(lua_State *, void **);
    int (*next)(lua_State *, int);
    void (*pushvalue)(lua_State *, int);
    int (*rawget)(lua_State *, int);
    int (*rawequal)(lua_State *, int, int);
    lua_Integer (*tointegerx)(lua_State *, int, int *);
    void (*setfield)(lua_State *, int, const char *);
    int (*isinteger)(lua_State *, int);
    int (*toboolean)(lua_State *, int);
    const void *(*topointer)(lua_State *, int);
    void *(*newuserdatauv)(lua_State *, size_t, int);
    int (*setmetatable)(lua_State *, int);
    lua_Unsigned (*rawlen)(lua_State *, int);
    lua_Number (*tonumberx)(lua_State *, int, int *);
    int (*setiuservalue)(lua_State *, int, int);
    void (*sethook)(lua_State *, lua_Hook, int, int);
    lua_Hook (*gethook)(lua_State *);
    lua_State *(*tothread)(lua_State *, int);
} LuaApi;
static LuaApi api;
static int api_ready = 0;

static const struct { const char *name; size_t offset; } SYMBOLS[] = {
#define SYM(field, name) {name, offsetof(LuaApi, field)}
    SYM(gettop, "lua_gettop"), SYM(settop, "lua_settop"), SYM(checkstack, "lua_checkstack"),
    SYM(pushnil, "lua_pushnil"), SYM(pushinteger, "lua_pushinteger"), SYM(pushnumber, "lua_pushnumber"),
    SYM(pushlstring, "lua_pushlstring"), SYM(pushboolean, "lua_pushboolean"),
    SYM(pushcclosure, "lua_pushcclosure"), SYM(pushlightuserdata, "lua_pushlightuserdata"),
    SYM(touserdata, "lua_touserdata"), SYM(rawgeti, "lua_rawgeti"), SYM(getfield, "lua_getfield"),
    SYM(createtable, "lua_createtable"), SYM(rawset, "lua_rawset"), SYM(type, "lua_type"),
    SYM(tolstring, "lua_tolstring"), SYM(pcallk, "lua_pcallk"), SYM(callk, "lua_callk"),
    SYM(error, "lua_error"), SYM(ref, "luaL_ref"), SYM(unref, "luaL_unref"),
    SYM(getallocf, "lua_getallocf"), SYM(next, "lua_next"), SYM(pushvalue, "lua_pushvalue"),
    SYM(rawget, "lua_rawget"), SYM(rawequal, "lua_rawequal"), SYM(tointegerx, "lua_tointegerx"),
    SYM(setfield, "lua_setfield"), SYM(isinteger, "lua_isinteger"), SYM(toboolean, "lua_toboolean"),
    SYM(topointer, "lua_topointer"), SYM(newuserdatauv, "lua_newuserdatauv"),
    SYM(setmetatable, "lua_setmetatable"), SYM(rawlen, "lua_rawlen"),
    SYM(tonumberx, "lua_tonumberx"), SYM(setiuservalue, "lua_setiuservalue"),
    SYM(sethook, "lua_sethook"), SYM(gethook, "lua_gethook"), SYM(tothread, "lua_tothread"),
#undef SYM
};

/* bind(path): resolve the Lua C API from lupa's already-loaded module at path. */
static PyObject *bridge_bind(PyObject *self, PyObject *arg) {
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL) return NULL;
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        PyErr_Format(PyExc_ImportError, "lupa's Lua module is not loaded: %s", dlerror());
        return NULL;
    }
    LuaApi resolved;  /* copied over api only when every symbol is there */
    for (size_t i = 0; i < sizeof(SYMBOLS) / sizeof(SYMBOLS[0]); i++) {
        void *fn = dlsym(handle, SYMBOLS[i].name);
        if (fn == NULL) {
            PyErr_Format(PyExc_ImportError, "lupa's Lua module does not export %s", SYMBOLS[i].name);
            return NULL;  /* the handle stays open: the module is loaded anyway */
        }
        memcpy((char *)&resolved + SYMBOLS[i].offset, &fn, sizeof(fn));
    }
    if (!api_ready) api = resolved;
    api_ready = 1;
    Py_RETURN_NONE;
}

/* ---- an image of the globals (bootstrap.lua: take_snapshot, restore_snapshot) ------------------
   The check after every route call walks the global table (below). Most handlers leave the globals
   alone, and then the table's hash part is, byte for byte, what it was after the last restore: its
   keys and values are the same objects at the same places, and none of their addresses can have
   been reused: the walk and the restore hold the globals to the snapshot's own objects (a number of
   the other subtype, a negative zero or a copy of a long string counts as a change and is put back),
   and the image itself keeps alive every long string the globals hold (snapshot_save), so an object
   the image points at outlives the image. snapshot_save keeps a copy of those bytes, and
   the check compares them first: equal bytes, same node array, same size, no array part, same
   metatable: the same contents. Any difference (a change, or one the GC made to an emptied slot)
   only means the walk runs and the image is taken again.
   This reads Lua 5.4's Table and Node structs (lobject.h), which the API does not expose. The layout
   is checked once, on tables made for the purpose, before any image is taken; when it does not
   match, snapshot_save answers nil and every check walks, as before. */
#define T_TT 8            /* Table: CommonHeader {next, tt, marked}, flags, lsizenode, alimit, array, */
#define T_LSIZENODE 11    /* node, lastfree, metatable, gclist */
#define T_ALIMIT 12
#define T_ARRAY 16
#define T_NODE 24
#define T_METATABLE 40
#define NODE_SIZE 24      /* Node: value (8), value tag, key tag, next (int), key (8) */
#define NODE_VALUE_TT 8
#define NODE_KEY_TT 9
#define NODE_KEY 16
#define LUA_VTABLE 5      /* makevariant(LUA_TTABLE, 0) */
#define LUA_VNUMINT 3     /* makevariant(LUA_TNUMBER, 0) */
#define LUA_VSHRSTR_KEY (4 | 64)  /* a short string, collectable */
#define MAX_IMAGE_TABLES 64
#define MAX_LSIZENODE 16

static int layout_known = 0;  /* 0: not checked yet, 1: the layout above, -1: another one */

#define FIELD(t, offset, type) (*(type const *)((const char *)(t) + (offset)))

/* Checks the layout on a table with eight known keys and values, and a metatable. */
static int check_layout(lua_State *L) {
    int top = api.gettop(L);
    api.createtable(L, 0, 8);
    const void *t = api.topointer(L, -1);
    int ok = t != NULL && FIELD(t, T_TT, unsigned char) == LUA_VTABLE && FIELD(t, T_LSIZENODE, unsigned char) == 3
             && FIELD(t, T_ALIMIT, unsigned int) == 0 && FIELD(t, T_ARRAY, void *) == NULL
             && FIELD(t, T_NODE, void *) != NULL && FIELD(t, T_METATABLE, void *) == NULL;
    const void *keys[8];
    for (int i = 0; ok && i < 8; i++) {
        char name[8] = "layout";
        name[6] = (char)('0' + i);
        api.pushlstring(L, name, 7);
        keys[i] = api.topointer(L, -1);  /* a string's address */
        api.pushinteger(L, 7000 + i);
        api.rawset(L, -3);
    }
    ok = ok && FIELD(t, T_LSIZENODE, unsigned char) == 3;  /* eight keys fit the eight slots */
    int found = 0;
    const char *node = ok ? FIELD(t, T_NODE, const char *) : NULL;
    for (int n = 0; ok && n < 8; n++) {
        const char *slot = node + n * NODE_SIZE;
        long long v = FIELD(slot, 0, long long);
        if (FIELD(slot, NODE_VALUE_TT, unsigned char) != LUA_VNUMINT
            || FIELD(slot, NODE_KEY_TT, unsigned char) != LUA_VSHRSTR_KEY || v < 7000 || v > 7007
            || FIELD(slot, NODE_KEY, const void *) != keys[v - 7000] || (found & (1 << (v - 7000)))) {
            ok = 0;
            break;
        }
        found |= 1 << (v - 7000);
    }
    ok = ok && found == 0xff;
    if (ok) {  /* the array part's fields, on a table that has one */
        api.createtable(L, 4, 0);
        const void *a = api.topointer(L, -1);
        for (int i = 1; i <= 4; i++) {
            api.pushinteger(L, 7100 + i);
            api.pushinteger(L, i);
            api.pushvalue(L, -2);
            api.rawset(L, -4);
            api.settop(L, -2);
        }
        const char *array = FIELD(a, T_ARRAY, const char *);
        ok = FIELD(a, T_ALIMIT, unsigned int) == 4 && array != NULL && FIELD(a, T_LSIZENODE, unsigned char) == 0
             && FIELD(array, 0, long long) == 7101 && FIELD(array, 16 * 3, long long) == 7104
             && FIELD(array, 8, unsigned char) == LUA_VNUMINT;
        api.settop(L, -2);
    }
    if (ok) {
        api.createtable(L, 0, 0);
        const void *mt = api.topointer(L, -1);
        api.setmetatable(L, -2);
        ok = FIELD(t, T_METATABLE, const void *) == mt;
    }
    api.settop(L, top);
    return ok;
}

typedef struct {
    const void *table;
    const char *node;
    const void *metatable;
    size_t size;           /* bytes of the node array */
    unsigned char lsizenode;
} TableImage;

typedef struct {
    int count;             /* env, then the overlays */
    size_t capacity;       /* bytes after the TableImages */
    TableImage tables[MAX_IMAGE_TABLES];
} Image;

/* snapshot_save(env, overlays [, image]) -> the image (the one given, rewritten, when it is large
   enough), or nil: a layout this file does not know, or a table with an array part. */
static int snapshot_save(lua_State *L) {
    if (layout_known == 0) layout_known = check_layout(L) ? 1 : -1;
    if (layout_known < 0 || api.type(L, 1) != LUA_TTABLE || api.type(L, 2) != LUA_TTABLE) {
        api.pushnil(L);
        return 1;
    }
    api.settop(L, 3);
    const void *tables[MAX_IMAGE_TABLES];
    int count = 0;
    tables[count++] = api.topointer(L, 1);
    for (lua_Integer i = 1;; i++) {
        const void *overlay = api.rawgeti(L, 2, i) == LUA_TTABLE ? api.topointer(L, -1) : NULL;
        api.settop(L, 3);
        if (overlay == NULL) break;
        if (count == MAX_IMAGE_TABLES) {
            api.pushnil(L);
            return 1;
        }
        tables[count++] = overlay;
    }
    size_t bytes = 0;
    for (int i = 0; i < count; i++) {
        const void *t = tables[i];
        unsigned char lsize = FIELD(t, T_LSIZENODE, unsigned char);
        if (FIELD(t, T_ALIMIT, unsigned int) != 0 || FIELD(t, T_ARRAY, void *) != NULL || lsize > MAX_LSIZENODE) {
            api.pushnil(L);
            return 1;
        }
        bytes += (size_t)NODE_SIZE << lsize;
    }
    Image *image = NULL;
    if (api.type(L, 3) == LUA_TUSERDATA && api.rawlen(L, 3) >= sizeof(Image)) {
        image = (Image *)api.touserdata(L, 3);
        if (image->capacity < bytes) image = NULL;
    }
    if (image == NULL) {
        image = (Image *)api.newuserdatauv(L, sizeof(Image) + bytes, 1);  /* may raise: the caller pcalls */
        image->capacity = bytes;
        image->count = 0;
    } else {
        api.pushvalue(L, 3);
    }
    /* 4: the image. Equal bytes mean equal globals only while every object the image points at lives.
       The snapshot holds the globals' objects, but a long string in env may be another object raw-equal
       to the snapshot's (the walk accepts it): the image keeps those alive itself. */
    api.createtable(L, 0, 0);                /* 5: what the image keeps alive */
    api.pushnil(L);
    while (api.next(L, 1)) {                 /* 6: key, 7: value */
        for (int i = 6; i <= 7; i++) {
            if (api.type(L, i) == LUA_TSTRING && api.rawlen(L, i) > 40) {  /* LUAI_MAXSHORTLEN */
                api.pushvalue(L, i);
                api.pushboolean(L, 1);
                api.rawset(L, 5);
            }
        }
        api.settop(L, 6);
    }
    api.setiuservalue(L, 4, 1);
    /* the allocations above may have run a collection step: nothing may have changed, but check the
       sizes again before copying into the image */
    size_t now = 0;
    for (int i = 0; i < count; i++) {
        const void *t = tables[i];
        if (FIELD(t, T_ALIMIT, unsigned int) != 0 || FIELD(t, T_ARRAY, void *) != NULL
            || FIELD(t, T_LSIZENODE, unsigned char) > MAX_LSIZENODE) {
            image->count = 0;
            api.pushnil(L);
            return 1;
        }
        now += (size_t)NODE_SIZE << FIELD(t, T_LSIZENODE, unsigned char);
    }
    if (now > image->capacity) {
        image->count = 0;
        api.pushnil(L);
        return 1;
    }
    char *copy = (char *)(image + 1);
    image->count = count;
    for (int i = 0; i < count; i++) {
        const void *t = tables[i];
        TableImage *ti = &image->tables[i];
        ti->table = t;
        ti->node = FIELD(t, T_NODE, const char *);
        ti->metatable = FIELD(t, T_METATABLE, const void *);
        ti->lsizenode = FIELD(t, T_LSIZENODE, unsigned char);
        ti->size = (size_t)NODE_SIZE << ti->lsizenode;
        memcpy(copy, ti->node, ti->size);
        copy += ti->size;
    }
    return 1;
}

/* Whether env (at index 1) and the overlays are exactly as when the image was taken. */
static int image_matches(lua_State *L, const Image *image) {
    if (image->count < 1 || image->tables[0].table != api.topointer(L, 1)) return 0;
    const char *copy = (const char *)(image + 1);
    for (int i = 0; i < image->count; i++) {
        const TableImage *ti = &image->tables[i];
        const void *t = ti->table;
        if (FIELD(t, T_NODE, const char *) != ti->node || FIELD(t, T_LSIZENODE, unsigned char) != ti->lsizenode
            || FIELD(t, T_ALIMIT, unsigned int) != 0 || FIELD(t, T_ARRAY, void *) != NULL
            || FIELD(t, T_METATABLE, const void *) != ti->metatable || memcmp(ti->node, copy, ti->size) != 0)
            return 0;
        copy += ti->size;
    }
    return 1;
}

/* Raw-equal and the same: rawequal holds for 42 and 42.0, for 0.0 and -0.0, and for two long strings
   of the same text (the image must only ever point at the snapshot's own objects). */
static int same_value(lua_State *L, int a, int b) {
    if (!api.rawequal(L, a, b)) return 0;
    int t = api.type(L, a);
    if (t == LUA_TSTRING) return api.topointer(L, a) == api.topointer(L, b);
    if (t != LUA_TNUMBER) return 1;
    if (api.isinteger(L, a) != api.isinteger(L, b)) return 0;
    if (api.isinteger(L, a)) return 1;
    lua_Number x = api.tonumberx(L, a, NULL), y = api.tonumberx(L, b, NULL);
    return memcmp(&x, &y, sizeof(x)) == 0;
}

/* ---- the globals check after every route call (bootstrap.lua: restore_snapshot) --------------
   snapshot_clean(env, snapshot, count, overlays [, image]) -> globals_clean, overlays_empty, imaged
   globals_clean: env holds exactly count keys, each the same as its value in snapshot (same_value);
   overlays_empty: every table of the sequence overlays is empty; imaged: the image (snapshot_save)
   matched, and nothing else was looked at. Otherwise the same pass as the bootstrap's Lua loop,
   without a call into C for every key. Raw access only: no metamethod runs. Called by trusted code only (the
   registry is out of plugins' reach). */
static int snapshot_clean(lua_State *L) {
    if (api.type(L, 1) != LUA_TTABLE || api.type(L, 2) != LUA_TTABLE || api.type(L, 4) != LUA_TTABLE) {
        api.pushlstring(L, "snapshot_clean: tables expected", 31);
        return api.error(L);
    }
    if (layout_known > 0 && api.type(L, 5) == LUA_TUSERDATA && api.rawlen(L, 5) >= sizeof(Image)
        && image_matches(L, (const Image *)api.touserdata(L, 5))) {
        api.pushboolean(L, 1);
        api.pushboolean(L, 1);
        api.pushboolean(L, 1);
        return 3;
    }
    lua_Integer expected = api.tointegerx(L, 3, NULL), count = 0;
    int clean = 1;
    api.settop(L, 4);
    api.pushnil(L);                          /* 5: key */
    while (api.next(L, 1)) {                 /* 5: key, 6: value */
        count++;
        api.pushvalue(L, 5);
        api.rawget(L, 2);                    /* 7: snapshot[key] */
        if (!same_value(L, 6, 7)) {          /* a nil never equals the value next() gave */
            clean = 0;
            break;
        }
        api.settop(L, 5);
    }
    api.settop(L, 4);
    int empty = 1;
    for (lua_Integer i = 1; empty; i++) {
        if (api.rawgeti(L, 4, i) != LUA_TTABLE) break;  /* 5: overlay */
        api.pushnil(L);
        if (api.next(L, 5)) empty = 0;
        api.settop(L, 4);
    }
    api.pushboolean(L, clean && count == expected);
    api.pushboolean(L, empty);
    api.pushboolean(L, 0);
    return 3;
}

/* ---- the packed answer (bootstrap.lua: pack_response, pack_json) -----------------------------
   pack_response(status, has_json, json, body) -> the packed string, or nil when the host must encode
   the answer. The same rules as the bootstrap's Lua version: ASCII only, JSON only where its encoding
   is unambiguous (tables with string keys or keys exactly 1..n, integers, booleans, printable-ASCII
   strings without quote or backslash), at most PACK_MAX_BYTES of text, PACK_MAX_ITEMS keys and
   PACK_MAX_DEPTH levels. Raw access only (no metamethod runs); the text is built in a buffer of the
   thread's own, so a memory error raised by the final push leaks nothing. */
#define PACK_MAX_BYTES 65536
#define PACK_MAX_ITEMS 512
#define PACK_MAX_DEPTH 16

typedef struct {
    char buf[PACK_MAX_BYTES + 16];
    size_t len;
    int items;
} Pack;
static _Thread_local Pack pack_buffer;

static int pack_add(Pack *p, const char *text, size_t n) {
    if (p->len + n > sizeof(p->buf)) return 0;
    memcpy(p->buf + p->len, text, n);
    p->len += n;
    return 1;
}

/* printable ASCII without quote and backslash: the text JSON writes as it is */
static int plain_text(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 32 || c >= 127 || c == '"' || c == '\\') return 0;
    }
    return 1;
}

static int pack_value(lua_State *L, Pack *p, int idx, int depth);

static int pack_table(lua_State *L, Pack *p, int idx, int depth) {
    if (depth >= PACK_MAX_DEPTH || !api.checkstack(L, 4)) return 0;
    api.pushnil(L);
    if (!api.next(L, idx)) {
        /* an empty table is {} as in ModulaCMS, [] when json.array marked it (as the host encodes it) */
        int marked = 0;
        if (api.getfield(L, LUA_REGISTRYINDEX, "modula.json_arrays") == LUA_TTABLE) {
            api.pushvalue(L, idx);
            api.rawget(L, -2);
            marked = api.toboolean(L, -1);
            api.settop(L, -2);
        }
        api.settop(L, -2);
        return marked ? pack_add(p, "[]", 2) : pack_add(p, "{}", 2);
    }
    if (api.type(L, -2) == LUA_TSTRING) {
        char sep = '{';
        do {                                               /* key, value */
            size_t n;
            const char *key;
            if (++p->items > PACK_MAX_ITEMS || api.type(L, -2) != LUA_TSTRING) return 0;
            key = api.tolstring(L, -2, &n);
            if (!plain_text(key, n) || !pack_add(p, &sep, 1) || !pack_add(p, "\"", 1) || !pack_add(p, key, n)
                || !pack_add(p, "\":", 2) || !pack_value(L, p, api.gettop(L), depth + 1))
                return 0;
            api.settop(L, -2);
            sep = ',';
        } while (api.next(L, idx));
        return pack_add(p, "}", 1);
    }
    /* a list only if its keys are exactly 1..count */
    lua_Integer count = 0, top = 0;
    api.settop(L, -3);
    api.pushnil(L);
    while (api.next(L, idx)) {
        count++;
        if (++p->items > PACK_MAX_ITEMS || !api.isinteger(L, -2)) return 0;
        lua_Integer key = api.tointegerx(L, -2, NULL);
        if (key < 1) return 0;
        if (key > top) top = key;
        api.settop(L, -2);
    }
    if (top != count || !pack_add(p, "[", 1)) return 0;
    for (lua_Integer i = 1; i <= count; i++) {
        if ((i > 1 && !pack_add(p, ",", 1))) return 0;
        api.rawgeti(L, idx, i);
        if (!pack_value(L, p, api.gettop(L), depth + 1)) return 0;
        api.settop(L, -2);
    }
    return pack_add(p, "]", 1);
}

/* The decimal text of x (as "%lld" writes it) into text (at least 21 bytes); returns its length. */
static size_t integer_text(char *text, lua_Integer x) {
    char digits[20];
    size_t n = 0, len = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0) text[len++] = '-';
    while (n) text[len++] = digits[--n];
    return len;
}

/* Adds the value at idx; 0 when it cannot be packed (the stack is then left for the caller to reset). */
static int pack_value(lua_State *L, Pack *p, int idx, int depth) {
    switch (api.type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = api.tolstring(L, idx, &n);
        return plain_text(s, n) && pack_add(p, "\"", 1) && pack_add(p, s, n) && pack_add(p, "\"", 1);
    }
    case LUA_TNUMBER: {
        char text[32];
        if (!api.isinteger(L, idx)) return 0;
        return pack_add(p, text, integer_text(text, api.tointegerx(L, idx, NULL)));
    }
    case LUA_TBOOLEAN:
        return api.toboolean(L, idx) ? pack_add(p, "true", 4) : pack_add(p, "false", 5);
    case LUA_TTABLE:
        return pack_table(L, p, idx, depth);
    default:
        return 0;
    }
}

static int pack_response(lua_State *L) {
    Pack *p = &pack_buffer;
    api.settop(L, 4);
    if (!api.isinteger(L, 1)) return 0;
    lua_Integer status = api.tointegerx(L, 1, NULL);
    if (status < 200 || status > 599) return 0;
    p->buf[0] = api.toboolean(L, 2) ? 'J' : 'B';
    p->len = 1 + integer_text(p->buf + 1, status);
    p->items = 0;
    int ok;
    if (api.toboolean(L, 2)) {
        ok = pack_value(L, p, 3, 0) && p->len - 4 <= PACK_MAX_BYTES;
    } else {
        size_t n = 0;
        const char *body = api.type(L, 4) == LUA_TSTRING ? api.tolstring(L, 4, &n) : NULL;
        ok = body != NULL && n <= PACK_MAX_BYTES && pack_add(p, body, n);
        for (size_t i = 0; ok && i < n; i++)
            if ((unsigned char)body[i] >= 128) ok = 0;
    }
    api.settop(L, 4);
    if (!ok) return 0;
    api.pushlstring(L, p->buf, p->len);
    return 1;
}

/* ---- the packed yield (tui.lua: the session steps; runtime/screens.py: Session._handle) -----------
   pack_yield(value, items, bytes) -> a token, or nil. What a screen yielded, written as JSON text into
   a buffer of the calling thread's own while Lua runs (lupa does not hold the GIL then); the session
   takes it with take_yield(token) and reads it with json.loads: two C calls where a Python walk of
   every table and string held the GIL for tens of milliseconds on a 10,000-row table (and the
   window's thread, which needs the GIL for every cell it draws, waited behind it).
   The text reads back as exactly what Sandbox.from_lua(value, _budget=[items, bytes]) returns, and
   nil (the host then converts with from_lua, which also raises its errors) wherever it might not:
   a table whose keys are not all strings or exactly 1..n, a value that is not a string, number,
   boolean or table, YIELD_MAX_DEPTH levels (from_lua's MAX_DEPTH), more items or bytes in all than
   from_lua's budget allows (counted as from_lua counts them; at the limit from_lua decides), text
   past YIELD_MAX_TEXT. Strings: JSON escapes for '"', '\' and bytes below 32, every other byte as it
   is; take_yield decodes the whole text as UTF-8 with replacement, as from_lua decodes each string
   (a replacement never swallows the ASCII byte after it, so the two agree). Floats: %.17g in the C
   locale (exact), ".0" added where that would read as an integer, Infinity/-Infinity/NaN as Python's
   json reads them. Raw access only: no metamethod runs. */
#define YIELD_MAX_DEPTH 64                  /* sandbox.py: MAX_DEPTH */
#define YIELD_STRING_COST 2                 /* sandbox.py: STRING_COST, TABLE_COST, ENTRY_COST */
#define YIELD_TABLE_COST 2
#define YIELD_ENTRY_COST 1
#define YIELD_MAX_TEXT ((size_t)48 << 20)   /* escapes can make the text longer than the bytes counted */
#define YIELD_KEEP ((size_t)1 << 20)        /* a larger buffer is freed once taken */

typedef struct {
    char *buf;
    size_t len, cap;
    long long token;     /* of the text in buf; 0: none */
    long long left;      /* from_lua's budget: items, bytes */
    long long room;
} YieldPack;
static _Thread_local YieldPack yield_pack;
static long long yield_tokens = 0;          /* __atomic */
static locale_t c_numeric = (locale_t)0;

static int yp_reserve(YieldPack *p, size_t n) {
    if (p->len + n <= p->cap) return 1;
    if (p->len + n > YIELD_MAX_TEXT) return 0;
    size_t cap = p->cap ? p->cap : 65536;
    while (cap < p->len + n) cap *= 2;
    if (cap > YIELD_MAX_TEXT) cap = YIELD_MAX_TEXT;
    char *buf = (char *)realloc(p->buf, cap);
    if (buf == NULL) return 0;
    p->buf = buf;
    p->cap = cap;
    return 1;
}

static int yp_add(YieldPack *p, const char *text, size_t n) {
    if (!yp_reserve(p, n)) return 0;
    memcpy(p->buf + p->len, text, n);
    p->len += n;
    return 1;
}

static int yp_string(YieldPack *p, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (!yp_reserve(p, n + 2)) return 0;
    p->buf[p->len++] = '"';
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c != '"' && c != '\\') continue;
        if (!yp_add(p, s + start, i - start)) return 0;
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t len = 2;
        if (c < 32) {
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            len = 6;
        }
        if (!yp_add(p, esc, len)) return 0;
        start = i + 1;
    }
    return yp_add(p, s + start, n - start) && yp_add(p, "\"", 1);
}

static int yp_number(lua_State *L, YieldPack *p, int idx) {
    char text[48];
    if (api.isinteger(L, idx)) return yp_add(p, text, integer_text(text, api.tointegerx(L, idx, NULL)));
    lua_Number x = api.tonumberx(L, idx, NULL);
    if (isnan(x)) return yp_add(p, "NaN", 3);
    if (isinf(x)) return x > 0 ? yp_add(p, "Infinity", 8) : yp_add(p, "-Infinity", 9);
    if (c_numeric == (locale_t)0) return 0;
    locale_t old = uselocale(c_numeric);  /* Qt sets the user's locale: "1,5" is not JSON */
    int n = snprintf(text, sizeof(text), "%.17g", x);
    uselocale(old);
    if (n <= 0 || (size_t)n >= sizeof(text) - 3) return 0;
    if (strpbrk(text, ".e") == NULL) { text[n++] = '.'; text[n++] = '0'; }
    return yp_add(p, text, (size_t)n);
}

static int yp_value(lua_State *L, YieldPack *p, int idx, int depth);

/* the table at idx (an absolute index), from_lua's costs counted as it counts them */
static int yp_table(lua_State *L, YieldPack *p, int idx, int depth) {
    if (depth >= YIELD_MAX_DEPTH || !api.checkstack(L, 3)) return 0;
    p->left -= 1;
    p->room -= YIELD_TABLE_COST;
    api.pushnil(L);
    if (!api.next(L, idx)) return yp_add(p, "[]", 2);  /* from_lua: an empty table is [] */
    if (api.type(L, -2) == LUA_TSTRING) {
        char sep = '{';
        do {                                        /* key, value */
            size_t n;
            if (api.type(L, -2) != LUA_TSTRING) return 0;
            const char *key = api.tolstring(L, -2, &n);
            p->left -= 1;
            p->room -= (long long)n + YIELD_STRING_COST + YIELD_ENTRY_COST;
            if (p->left < 0 || p->room < 0 || !yp_add(p, &sep, 1) || !yp_string(p, key, n) || !yp_add(p, ":", 1)
                || !yp_value(L, p, api.gettop(L), depth + 1))
                return 0;
            api.settop(L, -2);
            sep = ',';
        } while (api.next(L, idx));
        return yp_add(p, "}", 1);
    }
    /* a list only if its keys are exactly 1..count */
    lua_Integer count = 0, top = 0;
    api.settop(L, -3);
    api.pushnil(L);
    while (api.next(L, idx)) {
        if (!api.isinteger(L, -2)) return 0;
        lua_Integer key = api.tointegerx(L, -2, NULL);
        if (key < 1) return 0;
        if (key > top) top = key;
        count++;
        p->left -= 1;
        p->room -= YIELD_ENTRY_COST;
        if (p->left < 0) return 0;
        api.settop(L, -2);
    }
    if (top != count || !yp_add(p, "[", 1)) return 0;
    for (lua_Integer i = 1; i <= count; i++) {
        if ((i > 1 && !yp_add(p, ",", 1))) return 0;
        api.rawgeti(L, idx, i);
        if (!yp_value(L, p, api.gettop(L), depth + 1)) return 0;
        api.settop(L, -2);
    }
    return yp_add(p, "]", 1);
}

static int yp_value(lua_State *L, YieldPack *p, int idx, int depth) {
    switch (api.type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = api.tolstring(L, idx, &n);
        p->room -= (long long)n + YIELD_STRING_COST;
        return p->room >= 0 && yp_string(p, s, n);
    }
    case LUA_TNUMBER:
        p->room -= 1;
        return yp_number(L, p, idx);
    case LUA_TBOOLEAN:
        p->room -= 1;
        return api.toboolean(L, idx) ? yp_add(p, "true", 4) : yp_add(p, "false", 5);
    case LUA_TTABLE:
        return yp_table(L, p, idx, depth);
    default:
        return 0;
    }
}

static int pack_yield(lua_State *L) {
    YieldPack *p = &yield_pack;
    api.settop(L, 3);
    if (api.type(L, 1) != LUA_TTABLE || !api.isinteger(L, 2) || !api.isinteger(L, 3)) return 0;
    p->len = 0;
    p->token = 0;
    p->left = api.tointegerx(L, 2, NULL);
    p->room = api.tointegerx(L, 3, NULL);
    int ok = yp_table(L, p, 1, 0) && p->left >= 0 && p->room >= 0;
    api.settop(L, 3);
    if (!ok) {
        p->len = 0;
        return 0;
    }
    p->token = __atomic_add_fetch(&yield_tokens, 1, __ATOMIC_RELAXED);
    api.pushinteger(L, p->token);
    return 1;
}

/* take_yield(token) -> the text pack_yield wrote on this thread under token (then gone), or None */
static PyObject *take_yield(PyObject *self, PyObject *arg) {
    long long token = PyLong_AsLongLong(arg);
    if (token == -1 && PyErr_Occurred()) return NULL;
    YieldPack *p = &yield_pack;
    if (token <= 0 || p->token != token) Py_RETURN_NONE;
    PyObject *text = PyUnicode_DecodeUTF8(p->buf, (Py_ssize_t)p->len, "replace");
    p->token = 0;
    p->len = 0;
    if (p->cap > YIELD_KEEP) {
        free(p->buf);
        p->buf = NULL;
        p->cap = 0;
    }
    return text;
}

/* ---- the watchdog: deadlines that do not wait for the count hook --------------------------------
   The budget hook runs every TICK instructions, and one instruction can be milliseconds of C work
   (comparing two long strings, a library function on a long string): the hook alone can fire
   seconds late. One thread of ours, which never takes the GIL, looks at every armed call of every
   VM each WATCH_POLL and, for a call past its deadline (or one that has held the GIL longer than
   GIL_POKE), sets a count hook of 1 on the call's threads with lua_sethook, the one Lua call meant to
   be made asynchronously. That hook (watch_hook) puts the budget hook back and runs it at once: it
   reads the clock and trips the deadline, or lets the GIL go for the rest of the call.
   The threads: the VM's main state and the coroutines being resumed inside each other (the
   bootstrap's resume wrappers push and pop them here, and keep them alive until the call ends). All
   of a watch's fields are read and written under its mutex, except gil_held and saved, which only
   the thread running the call writes (the watchdog reads gil_held only to decide whether to poke).
   The watch is a userdata of its state: its __gc (at lua_close) takes it out of the list, under the
   list's mutex, which the watchdog holds while it pokes. */
#define WATCH_KEY "modula.watch"
#define WATCH_STACK 256          /* resumes nest at most LUAI_MAXCCALLS (200) deep */
#define WATCH_POLL_NS 5000000L   /* 5 ms */
#define GIL_SLICE 0.002          /* a call lets the GIL go at its first hook after this long */
#define GIL_POKE 0.005           /* a call holding the GIL this long gets its hook fired */
#define REPOKE 0.05              /* a poke that found the wrong thread is repeated this often */
#define WATCH_PARK 1.0           /* with nothing armed this long, the watchdog sleeps until an arm */

typedef struct Watch {
    pthread_mutex_t mutex;
    struct Watch *next;
    lua_State *main;
    lua_Hook hookf;              /* the hook debug.sethook installs (ldblib's dispatcher) */
    int tick;
    int active;
    int depth;
    double deadline, started, poked_at;
    lua_State *stack[WATCH_STACK];
    volatile int gil_held;       /* an entry holds the GIL for this call and may let it go */
    PyThreadState *saved;        /* the entry's thread state while it does not hold the GIL */
} Watch;

static pthread_mutex_t watch_list_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_list_cond = PTHREAD_COND_INITIALIZER;
static Watch *watch_list = NULL;
static int watchdog_running = 0;
static int watchdog_parked = 0;  /* __atomic */

static double monotonic_now(void) {  /* time.monotonic()'s clock */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void watch_hook(lua_State *L, lua_Debug *ar) {
    Watch *w = api.getfield(L, LUA_REGISTRYINDEX, WATCH_KEY) == LUA_TUSERDATA ? (Watch *)api.touserdata(L, -1) : NULL;
    api.settop(L, -2);
    if (w == NULL || w->hookf == NULL) {
        api.sethook(L, NULL, 0, 0);
        return;
    }
    api.sethook(L, w->hookf, LUA_MASKCOUNT, w->tick);
    w->hookf(L, ar);  /* the budget hook: may raise (a Lua error unwinds through here, nothing to undo) */
}

static void watch_poke(Watch *w) {  /* w->mutex held */
    api.sethook(w->main, watch_hook, LUA_MASKCOUNT, 1);
    for (int i = 0; i < w->depth; i++) api.sethook(w->stack[i], watch_hook, LUA_MASKCOUNT, 1);
}

/* Scans the list once; 1 when some call is armed. The list's mutex is held. */
static int watch_scan(double now, int poke) {
    int any = 0;
    for (Watch *w = watch_list; w != NULL; w = w->next) {
        pthread_mutex_lock(&w->mutex);
        if (w->active) {
            any = 1;
            int due = now >= w->deadline || (w->gil_held && now - w->started >= GIL_POKE);
            if (poke && due && now - w->poked_at >= REPOKE) {
                watch_poke(w);
                w->poked_at = now;
            }
        }
        pthread_mutex_unlock(&w->mutex);
    }
    return any;
}

static void *watchdog(void *unused) {
    double busy_at = monotonic_now();
    pthread_mutex_lock(&watch_list_mutex);
    for (;;) {
        double now = monotonic_now();
        if (watch_scan(now, 1)) busy_at = now;
        if (now - busy_at > WATCH_PARK) {
            /* parked first, then scanned again: an arm either is seen here or sees the flag and wakes us */
            __atomic_store_n(&watchdog_parked, 1, __ATOMIC_SEQ_CST);
            if (!watch_scan(now, 0)) pthread_cond_wait(&watch_list_cond, &watch_list_mutex);
            __atomic_store_n(&watchdog_parked, 0, __ATOMIC_SEQ_CST);
            busy_at = monotonic_now();
            continue;
        }
        pthread_mutex_unlock(&watch_list_mutex);
        struct timespec pause = {0, WATCH_POLL_NS};
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&watch_list_mutex);
    }
    return NULL;
}

static Watch *watch_of(lua_State *L) { return (Watch *)api.touserdata(L, lua_upvalueindex(1)); }

/* watch_prime(tick): called once with the budget hook set, to learn which C hook debug.sethook
   installs (ldblib's dispatcher, the same for every thread) and the count it runs at. */
static int watch_prime(lua_State *L) {
    Watch *w = watch_of(L);
    lua_Hook h = api.gethook(L);
    int tick = (int)api.tointegerx(L, 1, NULL);
    pthread_mutex_lock(&w->mutex);
    if (h != NULL && h != watch_hook) w->hookf = h;
    w->tick = tick > 0 ? tick : 1;
    pthread_mutex_unlock(&w->mutex);
    return 0;
}

/* watch_arm(deadline) -> false, or when the call holds the GIL (an entry made it) the time at which
   it should let it go. Called by the bootstrap's arm(), before it sets the budget hook. */
static int watch_arm(lua_State *L) {
    Watch *w = watch_of(L);
    double deadline = api.tonumberx(L, 1, NULL);
    double now = monotonic_now();
    pthread_mutex_lock(&w->mutex);
    w->deadline = deadline;
    w->started = now;
    w->poked_at = 0;
    w->depth = 0;
    w->active = 1;
    pthread_mutex_unlock(&w->mutex);
    if (__atomic_load_n(&watchdog_parked, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&watch_list_mutex);
        pthread_cond_signal(&watch_list_cond);
        pthread_mutex_unlock(&watch_list_mutex);
    }
    if (w->gil_held) api.pushnumber(L, now + GIL_SLICE);
    else api.pushboolean(L, 0);
    return 1;
}

/* watch_disarm() -> whether the watchdog poked this call (then the caller clears the main state's
   hook again: the poke may have come after it did) */
static int watch_disarm(lua_State *L) {
    Watch *w = watch_of(L);
    pthread_mutex_lock(&w->mutex);
    int poked = w->poked_at != 0;
    w->active = 0;
    w->depth = 0;
    pthread_mutex_unlock(&w->mutex);
    api.pushboolean(L, poked);
    return 1;
}

/* watch_push(co) -> the depth after it; the caller keeps co alive until the call ends */
static int watch_push(lua_State *L) {
    Watch *w = watch_of(L);
    lua_State *co = api.type(L, 1) == LUA_TTHREAD ? api.tothread(L, 1) : NULL;
    pthread_mutex_lock(&w->mutex);
    if (co != NULL && w->depth < WATCH_STACK) w->stack[w->depth++] = co;
    int depth = w->depth;
    pthread_mutex_unlock(&w->mutex);
    api.pushinteger(L, depth);
    return 1;
}

/* watch_pop(depth): back to that depth (what the matching push returned, minus one) */
static int watch_pop(lua_State *L) {
    Watch *w = watch_of(L);
    lua_Integer depth = api.tointegerx(L, 1, NULL);
    pthread_mutex_lock(&w->mutex);
    if (depth >= 0 && depth < w->depth) w->depth = (int)depth;
    pthread_mutex_unlock(&w->mutex);
    return 0;
}

/* The rest of the call runs without the GIL (host functions take it back through lupa's callbacks,
   which do that themselves); the entry takes it again when the protected call returns. */
static int watch_drop_gil(lua_State *L) {
    Watch *w = watch_of(L);
    if (w->gil_held && w->saved == NULL) {
        w->gil_held = 0;
        w->saved = PyEval_SaveThread();
    }
    return 0;
}

static int watch_clock(lua_State *L) {
    api.pushnumber(L, monotonic_now());
    return 1;
}

static int watch_gc(lua_State *L) {
    Watch *w = (Watch *)api.touserdata(L, 1);
    if (w == NULL || w->main == NULL) return 0;
    pthread_mutex_lock(&watch_list_mutex);
    for (Watch **p = &watch_list; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&watch_list_mutex);
    w->main = NULL;
    pthread_mutex_destroy(&w->mutex);
    return 0;
}

static const struct { const char *name; lua_CFunction fn; } WATCH_FUNCTIONS[] = {
    {"modula.watch_prime", watch_prime}, {"modula.watch_arm", watch_arm}, {"modula.watch_disarm", watch_disarm}, {"modula.watch_push", watch_push},
    {"modula.watch_pop", watch_pop}, {"modula.drop_gil", watch_drop_gil}, {"modula.clock", watch_clock},
};

/* watch(state_address): the watchdog for the runtime whose main state is there (called once, right
   after the bootstrap ran, with the memory limit off and the runtime used by this thread only). */
static PyObject *bridge_watch(PyObject *self, PyObject *arg) {
    if (!api_ready) {
        PyErr_SetString(PyExc_RuntimeError, "bind() has not been called");
        return NULL;
    }
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    lua_State *L = (lua_State *)(uintptr_t)address;
    if (!api.checkstack(L, 4)) {
        PyErr_SetString(PyExc_MemoryError, "no Lua stack left");
        return NULL;
    }
    int top = api.gettop(L);
    if (api.getfield(L, LUA_REGISTRYINDEX, WATCH_KEY) != LUA_TNIL) {
        api.settop(L, top);
        PyErr_SetString(PyExc_RuntimeError, "this state has a watch already");
        return NULL;
    }
    api.settop(L, top);
    if (!watchdog_running) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, watchdog, NULL);
        pthread_attr_destroy(&attr);
        if (failed) {
            PyErr_SetString(PyExc_RuntimeError, "cannot start the watchdog thread");
            return NULL;
        }
        watchdog_running = 1;
    }
    Watch *w = (Watch *)api.newuserdatauv(L, sizeof(Watch), 0);
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mutex, NULL);
    w->main = L;
    api.createtable(L, 0, 1);
    api.pushcclosure(L, watch_gc, 0);
    api.setfield(L, -2, "__gc");
    api.setmetatable(L, -2);
    for (size_t i = 0; i < sizeof(WATCH_FUNCTIONS) / sizeof(WATCH_FUNCTIONS[0]); i++) {
        api.pushvalue(L, -1);
        api.pushcclosure(L, WATCH_FUNCTIONS[i].fn, 1);
        api.setfield(L, LUA_REGISTRYINDEX, WATCH_FUNCTIONS[i].name);
    }
    api.setfield(L, LUA_REGISTRYINDEX, WATCH_KEY);  /* pops the userdata */
    api.settop(L, top);
    pthread_mutex_lock(&watch_list_mutex);
    w->next = watch_list;
    watch_list = w;
    pthread_mutex_unlock(&watch_list_mutex);
    Py_RETURN_NONE;
}

/* ---- an entry: one Lua function of one state ---------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *runtime;     /* the LuaRuntime that owns L: kept alive as long as the entry is */
    PyObject *acquire;     /* its lock's acquire and release (bound methods) */
    PyObject *release;
    lua_State *L;          /* NULL once cleared (the entry then declines every call) */
    MemoryStatus *memory;
    int ref;               /* the function, in the registry */
    size_t limit;          /* the memory limit while the entry runs (bytes above lupa's base) */
    size_t room;           /* memory that must be free before the call */
    Watch *watch;          /* the state's watch (it lives as long as the state), or NULL */
    vectorcallfunc vectorcall;
} Entry;

enum { ARG_NIL, ARG_BOOL, ARG_INT, ARG_NUMBER, ARG_BYTES, ARG_MAP };

/* The kind of a Python argument, or -1 when it cannot be pushed here (the caller takes lupa's path). */
static int arg_kind(PyObject *v) {
    if (v == Py_None) return ARG_NIL;
    if (PyBool_Check(v)) return ARG_BOOL;
    if (PyBytes_CheckExact(v)) return ARG_BYTES;
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        return ARG_INT;
    }
    if (PyFloat_CheckExact(v)) return ARG_NUMBER;
    if (PyList_CheckExact(v)) {
        /* a map of strings, flat: [name, value, name, value, ...] */
        Py_ssize_t n = PyList_GET_SIZE(v);
        if (n % 2 || n / 2 > MAX_PAIRS) return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!PyBytes_CheckExact(PyList_GET_ITEM(v, i))) return -1;
        return ARG_MAP;
    }
    return -1;
}

typedef struct {
    Entry *entry;
    PyObject *const *args;
    Py_ssize_t nargs;
    const char *kinds;
} Call;

static void push_bytes(lua_State *L, PyObject *v) {
    api.pushlstring(L, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
}

/* Runs protected: pushes the function and the arguments (allocation errors are Lua errors here),
   then calls. No Python error can occur: the arguments were checked. */
static int protected_call(lua_State *L) {
    Call *c = (Call *)api.touserdata(L, 1);
    if (!api.checkstack(L, (int)c->nargs + 4)) {
        api.pushlstring(L, "stack overflow", 14);
        return api.error(L);
    }
    api.rawgeti(L, LUA_REGISTRYINDEX, c->entry->ref);
    for (Py_ssize_t i = 0; i < c->nargs; i++) {
        PyObject *v = c->args[i];
        switch (c->kinds[i]) {
        case ARG_NIL: api.pushnil(L); break;
        case ARG_BOOL: api.pushboolean(L, v == Py_True); break;
        case ARG_INT: api.pushinteger(L, PyLong_AsLongLong(v)); break;
        case ARG_NUMBER: api.pushnumber(L, PyFloat_AS_DOUBLE(v)); break;
        case ARG_BYTES: push_bytes(L, v); break;
        case ARG_MAP: {
            Py_ssize_t n = PyList_GET_SIZE(v);
            api.createtable(L, 0, (int)(n / 2));
            for (Py_ssize_t j = 0; j < n; j += 2) {
                push_bytes(L, PyList_GET_ITEM(v, j));
                push_bytes(L, PyList_GET_ITEM(v, j + 1));
                api.rawset(L, -3);
            }
            break;
        }
        }
    }
    api.callk(L, (int)c->nargs, 1, 0, NULL);
    return 1;
}

/* entry(*args): bytes (the string the function returned; b"" for anything else), or
   (status, message) when the protected call failed (status 4: out of memory), or None when the
   call was not made: an argument of another type, or less free memory than the room asked for. */
static PyObject *entry_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Entry *e = (Entry *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    char kinds[MAX_ARGS];
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "an entry takes no keyword arguments");
        return NULL;
    }
    if (nargs > MAX_ARGS) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        int kind = arg_kind(args[i]);
        if (kind < 0) Py_RETURN_NONE;
        kinds[i] = (char)kind;
    }
    if (e->L == NULL) Py_RETURN_NONE;
    PyObject *locked = PyObject_CallNoArgs(e->acquire);  /* may wait, with the GIL released */
    if (locked == NULL) return NULL;
    Py_DECREF(locked);
    lua_State *L = e->L;  /* read again: the wait may have let the entry be cleared */
    MemoryStatus *m = e->memory;
    if (L == NULL || m->used - m->base_usage + e->room > e->limit || !api.checkstack(L, 3)) {
        PyObject *released = PyObject_CallNoArgs(e->release);
        if (released == NULL) return NULL;
        Py_DECREF(released);
        Py_RETURN_NONE;
    }
    int top = api.gettop(L);
    Call c = {e, args, nargs, kinds};
    api.pushcclosure(L, protected_call, 0);
    api.pushlightuserdata(L, &c);
    size_t outer_limit = m->limit;  /* off (0) when the host calls: lupa's own conversions never meet it */
    m->limit = m->base_usage + e->limit;
    Watch *w = e->watch;
    if (w != NULL) w->gil_held = 1;  /* a long call may let the GIL go (watch_drop_gil) */
    int status = api.pcallk(L, 1, 1, 0, 0, NULL);
    if (w != NULL) {
        w->gil_held = 0;
        if (w->saved != NULL) {
            PyThreadState *saved = w->saved;
            w->saved = NULL;
            PyEval_RestoreThread(saved);
        }
    }
    m->limit = outer_limit;

    PyObject *result;
    size_t size = 0;
    const char *text = api.type(L, -1) == LUA_TSTRING ? api.tolstring(L, -1, &size) : NULL;
    if (status == 0) {
        result = text ? PyBytes_FromStringAndSize(text, (Py_ssize_t)size) : PyBytes_FromStringAndSize("", 0);
    } else if (text) {
        result = Py_BuildValue("(iy#)", status, text, (Py_ssize_t)size);
    } else {
        result = Py_BuildValue("(iO)", status, Py_None);
    }
    api.settop(L, top);
    PyObject *released = PyObject_CallNoArgs(e->release);
    if (released == NULL) {
        Py_XDECREF(result);
        return NULL;
    }
    Py_DECREF(released);
    return result;
}

static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs);

static int entry_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(((Entry *)self)->runtime);
    Py_VISIT(((Entry *)self)->acquire);
    Py_VISIT(((Entry *)self)->release);
    return 0;
}

static int entry_clear(PyObject *self) {
    Entry *e = (Entry *)self;
    e->L = NULL;
    e->memory = NULL;
    Py_CLEAR(e->runtime);
    Py_CLEAR(e->acquire);
    Py_CLEAR(e->release);
    return 0;
}

static void entry_dealloc(PyObject *self) {
    /* the registry reference goes with the state: sandboxes are closed whole, never one entry */
    PyObject_GC_UnTrack(self);
    entry_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "modula_desktop.core.plugins.runtime._luabridge.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = entry_traverse,
    .tp_clear = entry_clear,
    .tp_vectorcall_offset = offsetof(Entry, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = entry_new,
    .tp_dealloc = entry_dealloc,
    .tp_doc = "Entry(runtime, lock, state_address, registry_key, limit, room, used): a Lua function of "
              "the registry, called holding the runtime's lock, with the memory limit on",
};

/* Entry(runtime, lock, state_address, registry_key, limit, room, used): runtime is the LuaRuntime
   whose main state is at state_address, lock its runtime lock (acquire() and release()); registry_key names the function in the registry (the bootstrap put
   it there); used is lupa's get_memory_used() now, with the limit off, to check the allocator's
   layout. */
static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *runtime, *lock;
    unsigned long long address;
    const char *key;
    Py_ssize_t limit, room, used;
    if (!api_ready) {
        PyErr_SetString(PyExc_RuntimeError, "bind() has not been called");
        return NULL;
    }
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Entry() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOKsnnn", &runtime, &lock, &address, &key, &limit, &room, &used)) return NULL;
    if (limit <= 0 || room < 0 || used < 0) {
        PyErr_SetString(PyExc_ValueError, "limit, room and used must be positive");
        return NULL;
    }
    lua_State *L = (lua_State *)(uintptr_t)address;
    void *ud = NULL;
    api.getallocf(L, &ud);
    MemoryStatus *m = (MemoryStatus *)ud;
    if (m == NULL || m->limit != 0 || m->used < m->base_usage || m->used - m->base_usage != (size_t)used) {
        PyErr_SetString(PyExc_RuntimeError, "lupa's allocator is not the one this module knows");
        return NULL;
    }
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire ? PyObject_GetAttrString(lock, "release") : NULL;
    if (release == NULL) {
        Py_XDECREF(acquire);
        return NULL;
    }
    int top = api.gettop(L);
    if (!api.checkstack(L, 2)) {
        Py_DECREF(acquire);
        Py_DECREF(release);
        PyErr_SetString(PyExc_MemoryError, "no Lua stack left");
        return NULL;
    }
    if (api.getfield(L, LUA_REGISTRYINDEX, key) != LUA_TFUNCTION) {
        api.settop(L, top);
        Py_DECREF(acquire);
        Py_DECREF(release);
        PyErr_Format(PyExc_RuntimeError, "the registry holds no function %s", key);
        return NULL;
    }
    int ref = api.ref(L, LUA_REGISTRYINDEX);  /* pops it */
    Watch *watch = api.getfield(L, LUA_REGISTRYINDEX, WATCH_KEY) == LUA_TUSERDATA ? (Watch *)api.touserdata(L, -1) : NULL;
    api.settop(L, top);
    api.pushcclosure(L, snapshot_clean, 0);
    api.setfield(L, LUA_REGISTRYINDEX, "modula.snapshot_clean");
    api.pushcclosure(L, snapshot_save, 0);
    api.setfield(L, LUA_REGISTRYINDEX, "modula.snapshot_save");
    api.pushcclosure(L, pack_response, 0);
    api.setfield(L, LUA_REGISTRYINDEX, "modula.pack_response");
    api.pushcclosure(L, pack_yield, 0);
    api.setfield(L, LUA_REGISTRYINDEX, "modula.pack_yield");
    api.settop(L, top);
    Entry *e = (Entry *)type->tp_alloc(type, 0);
    if (e == NULL) {
        Py_DECREF(acquire);
        Py_DECREF(release);
        return NULL;
    }
    Py_INCREF(runtime);
    e->runtime = runtime;
    e->acquire = acquire;
    e->release = release;
    e->L = L;
    e->memory = m;
    e->ref = ref;
    e->limit = (size_t)limit;
    e->room = (size_t)room;
    e->watch = watch;
    e->vectorcall = entry_vectorcall;
    return (PyObject *)e;
}

/* ---- the request headers of a WSGI environ, flat (server/plugin_routes.py: wsgi_headers) -------
   flat_headers(environ, drop_authorization) -> [name, value, ...] as bytes, or None when the environ
   holds anything but ASCII text in its keys and header values (wsgi_headers, the Python version,
   then does the work: this is its common case without a Python loop). The headers are the HTTP_*
   keys, CONTENT_TYPE and CONTENT_LENGTH, in the environ's order; names in lower case with '-' for
   '_'; the Authorization header left out when drop_authorization is true. */
#define MAX_HEADER_NAME 256

static int append_bytes(PyObject *list, const char *data, Py_ssize_t n) {
    PyObject *b = PyBytes_FromStringAndSize(data, n);
    if (b == NULL) return -1;
    int r = PyList_Append(list, b);
    Py_DECREF(b);
    return r;
}

static PyObject *flat_headers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "flat_headers(environ: dict, drop_authorization)");
        return NULL;
    }
    PyObject *env = args[0];
    int drop = PyObject_IsTrue(args[1]);
    if (drop < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    char name[MAX_HEADER_NAME];
    while (PyDict_Next(env, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key)) goto python;
        Py_ssize_t n = PyUnicode_GET_LENGTH(key);
        const char *k = (const char *)PyUnicode_DATA(key), *src;
        Py_ssize_t len;
        if (n > 5 && memcmp(k, "HTTP_", 5) == 0) {
            src = k + 5;
            len = n - 5;
        } else if ((n == 12 && memcmp(k, "CONTENT_TYPE", 12) == 0) || (n == 14 && memcmp(k, "CONTENT_LENGTH", 14) == 0)) {
            src = k;
            len = n;
        } else {
            continue;  /* not a header */
        }
        if (len > MAX_HEADER_NAME) goto python;
        for (Py_ssize_t i = 0; i < len; i++) {
            char c = src[i];
            name[i] = c == '_' ? '-' : (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        if (drop && len == 13 && memcmp(name, "authorization", 13) == 0) continue;
        if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) goto python;
        if (append_bytes(out, name, len) < 0
            || append_bytes(out, (const char *)PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
python:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bridge_bind, METH_O, "bind(path): use the Lua C API of lupa's loaded module at path"},
    {"watch", bridge_watch, METH_O, "watch(state_address): deadlines for the state's calls, kept by a thread of ours"},
    {"take_yield", take_yield, METH_O, "take_yield(token): the text pack_yield wrote on this thread, or None"},
    {"flat_headers", (PyCFunction)(void (*)(void))flat_headers, METH_FASTCALL,
     "flat_headers(environ, drop_authorization): the request headers as a flat list of bytes, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_luabridge", "Plugin route calls straight onto lupa's Lua state.", -1, methods,
};

PyMODINIT_FUNC PyInit__luabridge(void) {
    if (PyType_Ready(&EntryType) < 0) return NULL;
    if (c_numeric == (locale_t)0) c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    Py_INCREF(&EntryType);
    if (PyModule_AddObject(mod, "Entry", (PyObject *)&EntryType) < 0) {
        Py_DECREF(&EntryType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
