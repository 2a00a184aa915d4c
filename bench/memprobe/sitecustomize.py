"""What a running daemon's memory is made of, at each ``SIGUSR2`` (issue 7).

Put this folder first on the daemon's ``PYTHONPATH`` (``bench/soak.py``
passes its environment on)::

    MEMPROBE_OUT=/tmp/probe PYTHONPATH=$PWD/bench/memprobe:$PWD python bench/soak.py --work /tmp/soak-probe
    kill -USR2 <daemon pid>          # as often as wanted: /tmp/probe/dump-<n>.json

Each dump has ``/proc/self/status`` (RSS: anonymous, file), glibc's
``mallinfo2()`` (the main heap, in use and free), pymalloc's figures
(``sys._debugmallocstats``), object counts by type, every container of 300
entries or more (dictionaries of strings too, which ``gc.get_objects()``
leaves out: found as referents) and the entries and bytes of each cache.
The first dump calls ``gc.unfreeze()`` (the daemon's ``gc.freeze()`` hides
every long-lived object, the caches among them): the garbage collector's
full passes take longer afterwards. Only in ``twistd``; nothing else changes.
"""

import os
import signal
import sys

if "twistd" in sys.argv[0]:
    import collections
    import ctypes
    import gc
    import itertools
    import json
    import tempfile
    import time

    _count = itertools.count()
    _out = os.environ.get("MEMPROBE_OUT", "/tmp/memprobe")
    os.makedirs(_out, exist_ok=True)

    #: Types followed when a cache's bytes are counted (not stores, clocks...).
    _FOLLOWED = (
        "pypicache.index",
        "pypicache.storage.records",
        "pypicache.storage.shared",
        "pypicache.storage.listings",
        "pypicache.web.routing",
        "twisted.python.filepath",
        "packaging",
    )
    _DATA = (dict, list, tuple, set, frozenset, str, bytes, int, float, bool)
    #: Class name to the attribute holding its entries.
    _CACHES = {
        "SharedDocs": "_docs",
        "ProjectPages": "_memory",
        "Listings": "_cache",
        "SingleReads": "_kept",
        "RenderCache": "_entries",
        "Prefetcher": "_recent",
        "KeptMetadata": "_digests",
        "FileHostRoutes": "_urls",
        "Usage": "_recorded",
    }

    def _status() -> dict:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    out[key] = int(value.split()[0])
        return out

    def _mallinfo() -> dict:
        class Info(ctypes.Structure):
            _fields_ = [
                (n, ctypes.c_size_t)
                for n in (
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks "
                    "uordblks fordblks keepcost"
                ).split()
            ]

        try:
            call = ctypes.CDLL("libc.so.6").mallinfo2
        except (OSError, AttributeError):
            return {}
        call.restype = Info
        info = call()
        return {n: getattr(info, n) for n, _ in Info._fields_}

    def _pymalloc() -> dict:
        saved = os.dup(2)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode()
        out = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            value = value.strip().replace(",", "")
            if line.startswith("#") and value.isdigit():
                out[key.strip("# ").strip()] = int(value)
        return out

    def _bytes(root) -> int:
        seen, total, stack = set(), 0, [root]
        while stack:
            o = stack.pop()
            t = type(o)
            if id(o) in seen or isinstance(o, type):
                continue
            if not (isinstance(o, _DATA) or (t.__module__ or "").startswith(_FOLLOWED)):
                continue
            seen.add(id(o))
            total += sys.getsizeof(o)
            if isinstance(o, dict):
                stack.extend(o.keys())
                stack.extend(o.values())
            elif isinstance(o, (list, tuple, set, frozenset)):
                stack.extend(o)
            elif not isinstance(o, _DATA):
                if hasattr(o, "__dict__"):
                    stack.append(o.__dict__)
                for name in getattr(t, "__slots__", ()) or ():
                    stack.append(getattr(o, name, None))
        return total

    def _caches(objects) -> dict:
        out = {}
        for o in objects:
            attr = _CACHES.get(type(o).__name__)
            if attr is not None and hasattr(o, attr):
                entries = getattr(o, attr)
                key = f"{type(o).__module__}.{type(o).__name__} {getattr(o, 'folder', '')}"
                out.setdefault(key, []).append((len(entries), _bytes(entries)))
        for name, module in list(sys.modules.items()):
            if name.startswith("pypicache"):
                for attr, value in list(vars(module).items()):
                    if attr.startswith("__"):
                        continue
                    if getattr(value, "__module__", None) == name and hasattr(
                        value, "cache_info"
                    ):
                        info = value.cache_info()
                        out[f"lru {name}.{attr}"] = [(info.currsize, info.maxsize)]
                    elif (
                        type(value) in (dict, collections.OrderedDict)
                        and len(value) > 10
                    ):
                        out[f"{name}.{attr}"] = [(len(value), _bytes(value))]
        return out

    def _dump(signum, frame) -> None:
        n = next(_count)
        started = time.time()
        gc.unfreeze()
        objects = gc.get_objects()
        big = {}
        for o in objects:
            if isinstance(o, (dict, list, set, collections.deque)) and len(o) >= 300:
                big[id(o)] = (type(o).__name__, len(o))
            for r in gc.get_referents(o):
                if type(r) is dict and not gc.is_tracked(r) and len(r) >= 300:
                    big[id(r)] = ("dict (untracked)", len(r))
        record = {
            "n": n,
            "time": started,
            "status": _status(),
            "mallinfo": _mallinfo(),
            "pymalloc": _pymalloc(),
            "objects": len(objects),
            "types": dict(
                collections.Counter(type(o).__qualname__ for o in objects).most_common(
                    200
                )
            ),
            "containers": sorted(big.values(), key=lambda v: -v[1]),
            "caches": _caches(objects),
        }
        del objects
        record["seconds"] = time.time() - started
        with open(os.path.join(_out, f"dump-{n}.json"), "w") as f:
            json.dump(record, f, indent=1)

    signal.signal(signal.SIGUSR2, _dump)
