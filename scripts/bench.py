#!/usr/bin/env python3
"""Benchmarks vmshim against a bare run, interleaved (A B A B ...), and prints medians and ratios.

Usage: scripts/bench.py [--rounds N] [--quick] [--only start,loop,pieces,...] [--bin DIR] [--trace-dir DIR]
Builds bench/load.c, then for each workload runs it bare and under libvmshim.so (and, where
installed, under strace -f -k, ltrace -f, heaptrack and massif) in alternation, ROUNDS times each, and reports the
median of the work's own wall time (the program times itself, so process start and the shim's
set-up are left out). These machines are shared and noisy: read ratios, not seconds.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, shutil, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(tmp, bin_dir):
    """bench/load.c, and the workspace unless `bin_dir` (a directory holding a build's `vmshim`
    and `libvmshim.so`, to measure an older build against a newer one) is given."""
    if bin_dir is None:
        subprocess.run(["cargo", "build", "--release", "--workspace", "-q"], cwd=ROOT, check=True)
        bin_dir = os.path.join(ROOT, "target", "release")
    exe = os.path.join(tmp, "load")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", exe, os.path.join(ROOT, "bench", "load.c")], check=True)
    return exe, os.path.join(os.path.abspath(bin_dir), "libvmshim.so")


def build_http(tmp, static=False):
    """The load test's server (cgo, or `static`: the same source with CGO_ENABLED=0, which leaves
    bench/server_cgo.go out) and client."""
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="")
    server, client = os.path.join(tmp, "server-static" if static else "server"), os.path.join(tmp, "client")
    sources = [os.path.join(ROOT, "bench", f) for f in ("server.go", "server_cgo.go")]
    subprocess.run(["go", "build", "-o", server, *sources], env=dict(env, CGO_ENABLED="0" if static else "1"), check=True)
    subprocess.run(["go", "build", "-o", client, os.path.join(ROOT, "bench", "client.go")], env=dict(env, CGO_ENABLED="0"), check=True)
    return server, client


def http_rps(server, client, env, requests, tmp):
    """Starts the server (a path, or an argv list: the server under `vmshim run`; under `env`),
    loads it from the client, returns requests/s."""
    argv = server if isinstance(server, list) else [server]
    srv = subprocess.Popen(argv, env=env, cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().split()[1]
        out = subprocess.run([client, port, str(requests), "8"], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())
    finally:
        srv.stdin.close()
        srv.wait(timeout=30)
        for f in os.listdir(tmp):
            if f.startswith("vmshim."):
                os.remove(os.path.join(tmp, f))


def timed(cmd, env, tmp):
    out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, check=True)
    for f in os.listdir(tmp):
        if f.endswith(".trace") or f.startswith("vmshim.") or f.startswith("heaptrack."):
            os.remove(os.path.join(tmp, f))
    # The program prints its own time last; tools may print after it on stdout.
    times = [l for l in out.stdout.strip().splitlines() if l.replace(".", "", 1).isdigit()]
    return float(times[-1])


def event_cost(exe, bare_env, shim_env, rounds, n, tmp):
    """The time one recorded event adds, with its whole stack: N mprotect calls that change
    nothing, bare and under vmshim, from 16 C frames deep (C and glibc frames down to _start: 22
    frames), the same from two call sites in turn (no event has its predecessor's stack), and
    from Go through cgo (a cgo wrapper, then Go frames by frame pointers: 14 frames)."""
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", CGO_ENABLED="1")
    programs = [
        ("recorded event, C stack, 22 frames", [exe, "event", str(n)]),
        ("  ... two stacks in turn", [exe, "event-mix", str(n)]),
    ]
    if shutil.which("go"):
        gobin = os.path.join(tmp, "events_go")
        subprocess.run(["go", "build", "-o", gobin, os.path.join(ROOT, "bench", "events.go")], env=env, check=True)
        programs.append(("recorded event, Go stack, 14 frames", [gobin, str(n)]))
    for title, cmd in programs:
        bare, shim = [], []
        for _ in range(rounds):
            bare.append(timed(cmd, bare_env, tmp))
            shim.append(timed(cmd, shim_env, tmp))
        b, v = statistics.median(bare), statistics.median(shim)
        added = (v - b) / n * 1e9
        print(f"{title:<48}{b / n * 1e9:>15.0f} ns/call{v / n * 1e9:>15.0f} ns/call   +{added:.0f} ns per event "
              f"(target 250)", flush=True)


def report_scaling(exe, shim, bare_env, events, rounds, tmp):
    """Workload 5: the report over a trace of `events` events from a real run (bench/load.c
    `maps`: mmap/munmap from 200 distinct stacks over 2,048 live regions). Seconds and peak RSS
    of `vmshim report`, medians of `rounds` runs."""
    trace = os.path.join(tmp, "big.trace")
    env = dict(bare_env, LD_PRELOAD=shim, VMSHIM_OUT=trace, VMSHIM_MAX_BYTES=str(64 << 30))
    t0 = time.monotonic()
    subprocess.run([exe, "maps", str(events // 2)], env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    made = time.monotonic() - t0
    vmshim = os.path.join(os.path.dirname(shim), "vmshim")
    try:
        out = subprocess.run([vmshim, "report", "--json", trace], capture_output=True, text=True, check=True)
        recorded = json.loads(out.stdout)["events"]["recorded"]
        secs, rss = [], []
        for _ in range(rounds):
            t0 = time.monotonic()
            p = subprocess.Popen([vmshim, "report", trace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, _, usage = os.wait4(p.pid, 0)
            p.returncode = 0
            secs.append(time.monotonic() - t0)
            rss.append(usage.ru_maxrss * 1024)
        size = os.path.getsize(trace)
    finally:
        os.remove(trace)
    s, r = statistics.median(secs), statistics.median(rss)
    title = f"report over {recorded:,} events"
    print(f"{title:<48}{s:>14.2f} s{r / 2**20:>14.0f} MiB peak RSS   ({size / 2**30:.2f} GiB trace, made in "
          f"{made:.0f} s; targets 10 s, 1 GiB)", flush=True)


def spawn_wall(argv, env, cwd):
    """Wall time of one run of `argv`, from posix_spawn to its reaping, in seconds."""
    return spawn_costs(argv, env, cwd)[0]


def spawn_costs(argv, env, cwd):
    """(wall, CPU) of one run of `argv`, in seconds: wall from posix_spawn to its reaping; CPU
    the user + system time of it and of every descendant it reaped (wait4's rusage), which other
    load on a shared machine inflates far less than wall time."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed: status {status}")
    return elapsed, usage.ru_utime + usage.ru_stime


def clear(directory):
    for f in os.listdir(directory):
        os.remove(os.path.join(directory, f))


def disk(directory):
    """(files, bytes allocated) in `directory`: st_blocks * 512, what du counts."""
    names = os.listdir(directory)
    return len(names), sum(os.lstat(os.path.join(directory, f)).st_blocks * 512 for f in names)


def start_cost(shim, bare_env, pairs, tmp):
    """Issue 12: what the shim adds to a process's start and exit: /bin/true bare, under
    LD_PRELOAD, and under LD_PRELOAD with VMSHIM_WATCHED=1 (what `vmshim run` sets when its exit
    watcher reads every exit: the start-up map and Module records wait for a first recorded
    call, which /bin/true never makes) in turn (A B C A B C), `pairs` times; the median of each
    pair's difference, the ratio of the medians, and the trace the preloaded runs leave
    (allocated blocks)."""
    out, out_watched = os.path.join(tmp, "start"), os.path.join(tmp, "start-watched")
    os.makedirs(out, exist_ok=True)
    os.makedirs(out_watched, exist_ok=True)
    shim_env = dict(bare_env, LD_PRELOAD=shim, VMSHIM_OUT=os.path.join(out, "vmshim.%p.trace"))
    watched_env = dict(shim_env, VMSHIM_OUT=os.path.join(out_watched, "vmshim.%p.trace"), VMSHIM_WATCHED="1")
    bare, pre, added, watched, added_watched = [], [], [], [], []
    for _ in range(pairs):
        b = spawn_wall(["/bin/true"], bare_env, tmp)
        v = spawn_wall(["/bin/true"], shim_env, tmp)
        w = spawn_wall(["/bin/true"], watched_env, tmp)
        bare.append(b)
        pre.append(v)
        watched.append(w)
        added.append(v - b)
        added_watched.append(w - b)
    # The traces these runs left, one per run; the directories are cleared at the end only (on
    # ext4, creating a file right after deleting many scans the recently deleted inodes: a cost
    # of the benchmark's own deletions, not of the shim).
    each = [disk(d)[1] / max(disk(d)[0], 1) for d in (out, out_watched)]
    clear(out)
    clear(out_watched)
    b, v, w = statistics.median(bare), statistics.median(pre), statistics.median(watched)
    title = f"start: /bin/true, {pairs} pairs"
    print(f"{title:<48}{b * 1e3:>12.3f} ms bare{v * 1e3:>10.3f} ms shim   +{statistics.median(added) * 1e3:.3f} ms "
          f"median of pairs, {v / b:.2f}x; watched +{statistics.median(added_watched) * 1e3:.3f} ms, "
          f"{w / b:.2f}x; trace {each[0] / 1024:.0f} KiB allocated, {each[1] / 1024:.0f} KiB watched "
          f"(targets +0.3 ms, 64 KiB)", flush=True)


def loop_cost(shim, bare_env, rounds, n, tmp, trace_dir=None):
    """Issue 12: a bash loop of `n` /bin/true, bare, with LD_PRELOAD (bash and every child
    preloaded, traces into a temporary directory) and under `vmshim run` (the exit watcher, the
    ptrace hold, and the end of the run: exit maps attached, the report over every process,
    written to /dev/null), and under bench/floor.c with an empty preload library (vmshim run's
    mechanisms with nothing behind them: every process preloaded, every exit_group stopped by a
    seccomp listener that lets it go at once, the shell ptrace-held with its signal stops
    resumed), in turn (A B C D D C B A): medians, their ratios to bare, and the traces one run
    of each leaves (count, blocks allocated). The floor is what no work inside these mechanisms
    can go below: `run` over `floor` is what vmshim itself adds.

    Where the traces go matters on this machine's ext4 (no journal): each file creation scans
    the inodes of its block group deleted in the last 1-6 minutes (fs/ext4/ialloc.c,
    recently_deleted), 15 us per creation on a quiet file system, 170-750 us after a few
    thousand deletions (an earlier run of this benchmark, a test suite). Two loops in a row
    measure the file system's past; --trace-dir /dev/shm measures vmshim alone."""
    script = ["/bin/bash", "-c", f"for ((i = 0; i < {n}; i++)); do /bin/true; done"]
    vmshim = os.path.join(os.path.dirname(shim), "vmshim")
    floor = os.path.join(tmp, "floor")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", floor, os.path.join(ROOT, "bench", "floor.c")], check=True)
    floor_env = dict(bare_env, FLOOR_PRELOAD=empty_library(tmp))
    times = {"bare": [], "preload": [], "run": [], "floor": []}
    cpu = {"bare": [], "preload": [], "run": [], "floor": []}
    counts = {"preload": [], "run": []}
    sizes = {"preload": [], "run": []}
    # A directory per round and variant, all removed at the end: see start_cost on deleting
    # between runs.
    outs = []
    where = trace_dir or tmp
    for r in range(rounds):
        pre_out = tempfile.mkdtemp(prefix=f"loop{r}.", dir=where)
        run_out = tempfile.mkdtemp(prefix=f"run{r}.", dir=where)
        outs += [pre_out, run_out]
        shim_env = dict(bare_env, LD_PRELOAD=shim, VMSHIM_OUT=os.path.join(pre_out, "vmshim.%p.trace"))
        run_cmd = [vmshim, "run", "--report", os.devnull, "--out", os.path.join(run_out, "t"), "--"] + script
        variants = (("bare", script, bare_env), ("preload", script, shim_env), ("run", run_cmd, bare_env),
                    ("floor", [floor] + script, floor_env))
        # In turn, the order reversed every other round: a run measured right after a traced one
        # was seen 60-100 us per iteration slower (its predecessor's teardown overlapping it).
        for name, cmd, env in variants if r % 2 == 0 else variants[::-1]:
            wall, used = spawn_costs(cmd, env, tmp)
            times[name].append(wall)
            cpu[name].append(used)
        for name, out in (("preload", pre_out), ("run", run_out)):
            files, size = disk(out)
            counts[name].append(files)
            sizes[name].append(size)
    for out in outs:
        shutil.rmtree(out)
    b, bc = statistics.median(times["bare"]), statistics.median(cpu["bare"])
    f, fc = statistics.median(times["floor"]), statistics.median(cpu["floor"])
    title = f"loop: bash, {n} x /bin/true, {rounds} rounds, floor"
    print(f"{title:<48}{b:>12.3f} s bare{f:>11.3f} s floor    {f / b:.2f}x; CPU {bc:.3f} s bare, "
          f"{fc:.3f} s floor, {fc / bc:.2f}x (an empty preload, the exit stop and the hold, no work: "
          f"run is {statistics.median(times['run']) / f:.2f}x the floor)", flush=True)
    for name, target in (("preload", ""), ("run", ", target 1.3x")):
        v, vc = statistics.median(times[name]), statistics.median(cpu[name])
        title = f"loop: bash, {n} x /bin/true, {rounds} rounds, {name}"
        print(f"{title:<48}{b:>12.3f} s bare{v:>11.3f} s {name:<8} {v / b:.2f}x; CPU {bc:.3f} s bare, "
              f"{vc:.3f} s {name}, {vc / bc:.2f}x; {statistics.median(counts[name]):.0f} traces, "
              f"{statistics.median(sizes[name]) / 2**20:.1f} MiB allocated (target 64 MiB{target})", flush=True)


def empty_library(tmp):
    """A shared library with nothing in it, built in `tmp` (once): what any LD_PRELOAD costs."""
    empty_c, empty = os.path.join(tmp, "empty.c"), os.path.join(tmp, "libempty.so")
    if not os.path.exists(empty):
        with open(empty_c, "w") as f:
            f.write("int vmshim_bench_empty(void) { return 0; }\n")
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", empty, empty_c], check=True)
    return empty


def pieces_cost(shim, bare_env, rounds, n, tmp, trace_dir=None):
    """Issue 12: a shell loop's iteration, its two halves apart (bench/pieces.c): an exec'd
    /bin/true whose image alone is preloaded (vfork + execve from a bare process), and a fork
    whose parent and child are (children that leave at once), each bare, with an empty preload
    library (what any LD_PRELOAD costs) and with the shim as `vmshim run` sets it for its tree's
    processes (VMSHIM_WATCHED, a run id, a tracer that is not the image's parent, and the run's
    socket, which this benchmark binds and drains: the exec'd image waits with no trace, the fork
    child sends its Start record), in turn (A B C A B C): medians per exec or fork, the shim's
    medians of pairs over bare and over the empty library, and the page faults per exec or fork
    (the child's, from wait4; for a fork, the parent's too): counts, which this shared machine's
    noise leaves alone. The traces a fork child creates after all go to `trace_dir` when given
    (see loop_cost on ext4)."""
    import socket, threading
    exe = os.path.join(tmp, "pieces")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(ROOT, "bench", "pieces.c")], check=True)
    empty = empty_library(tmp)
    out = tempfile.mkdtemp(prefix="pieces.", dir=trace_dir or tmp)
    run_id = int.from_bytes(os.urandom(8), "little") | 1
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(b"\0vmshim-sink." + b"%016x" % run_id)
    sink.settimeout(0.05)
    draining = [True]

    def drain():
        while draining[0]:
            try:
                sink.recv(1 << 16)
            except (socket.timeout, OSError):
                pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    traced = dict(bare_env, VMSHIM_OUT=os.path.join(out, "vmshim.%p.trace"), VMSHIM_WATCHED="1",
                  VMSHIM_RUN="%016x" % run_id, VMSHIM_TRACER=str(os.getpid()), VMSHIM_SINK="1")
    for mode, via in (("exec", "PIECES_PRELOAD"), ("fork", "LD_PRELOAD")):
        variants = (("bare", bare_env), ("empty", dict(bare_env, **{via: empty})), ("shim", dict(traced, **{via: shim})))
        got = {name: [] for name, _ in variants}
        faults = {name: [] for name, _ in variants}
        for _ in range(rounds):
            for name, env in variants:
                r = subprocess.run([exe, mode, str(n)], env=env, capture_output=True, text=True, check=True)
                us, child, parent = (float(x) for x in r.stdout.split())
                got[name].append(us)
                faults[name].append((child, parent))
            clear(out)
        med = {name: statistics.median(v) for name, v in got.items()}
        over = lambda base: statistics.median(s - b for s, b in zip(got["shim"], got[base]))
        child = {name: statistics.median(c for c, _ in v) for name, v in faults.items()}
        parent = {name: statistics.median(p for _, p in v) for name, v in faults.items()}
        title = f"pieces: {mode} of /bin/true" if mode == "exec" else "pieces: fork, child exits at once"
        counted = (f"faults per exec {child['bare']:.1f} bare, {child['empty']:.1f} empty, {child['shim']:.1f} shim"
                   if mode == "exec" else
                   f"faults per fork: child {child['bare']:.1f} bare, {child['empty']:.1f} empty, {child['shim']:.1f} shim; "
                   f"parent {parent['bare']:.1f}, {parent['empty']:.1f}, {parent['shim']:.1f}")
        print(f"{title + f', {n} x {rounds}':<48}{med['bare']:>9.1f} us bare{med['empty']:>9.1f} us empty"
              f"{med['shim']:>9.1f} us shim   +{over('bare'):.1f} us over bare, +{over('empty'):.1f} us over "
              f"an empty preload (as under vmshim run); {counted}", flush=True)
    draining[0] = False
    drainer.join()
    sink.close()
    shutil.rmtree(out)


def explain_cost(shim, server, client, env, rounds, requests, tmp):
    """Issue 16: a loaded cgo HTTP server (bench/server.go, the ex1 shape) keeps its request rate
    while `vmshim explain --watch 1s PID` explains it once a second: the client's requests/s with no explain, with
    the server explained, and, as a control, with an idle process (`sleep`) explained instead, on
    the same machine at the same rate: the CPU the explain process itself takes from a loaded
    machine, without any stop of the server (A B C A B C, a fresh server each run); medians and
    their ratios (target >= 0.98x)."""
    vmshim = os.path.join(os.path.dirname(shim), "vmshim")

    def load(explained):
        srv = subprocess.Popen([server], env=env, cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        idle = subprocess.Popen(["sleep", "600"])
        stops, failures = [], []
        try:
            port = srv.stdout.readline().split()[1]
            target = {"server": srv.pid, "idle": idle.pid}.get(explained)
            cl = subprocess.Popen([client, port, str(requests), "8"], stdout=subprocess.PIPE, text=True)
            watcher = None
            if target:
                # Once a second, as a user watching it would: one `vmshim explain --watch 1s`
                # (JSON Lines: the first snapshot's report, then a line per round), not a new
                # explain process every second, which paid vmshim's start and libc's DWARF anew
                # each time (55 ms of CPU against 7 ms a round).
                watcher = subprocess.Popen([vmshim, "explain", "--json", "--watch", "1s", str(target)],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            rate = float(cl.communicate()[0].strip())
            if watcher:
                watcher.terminate()
                out, err = watcher.communicate()
                # Whole lines only: the terminate can cut the round being written.
                lines = out.split("\n")[:-1]
                if not lines:
                    failures.append(err.strip())
                elif explained == "server":
                    stops.append(json.loads(lines[0])["explain"]["stop_ns"] / 1e6)
                    stops += [json.loads(l)["stop_ns"] / 1e6 for l in lines[1:]]
            if cl.returncode != 0 or failures:
                raise SystemExit(f"explain benchmark failed: client {cl.returncode}, explain {failures}")
            return rate, stops
        finally:
            idle.kill()
            idle.wait()
            srv.stdin.close()
            srv.wait(timeout=30)

    rates = {"none": [], "server": [], "idle": []}
    stops = []
    for _ in range(rounds):
        for what in rates:
            rate, s = load(None if what == "none" else what)
            rates[what].append(rate)
            stops += s
    b, v, c = (statistics.median(rates[k]) for k in ("none", "server", "idle"))
    title = f"explain once a second, {requests} requests (req/s)"
    stop = f"{statistics.median(stops):.2f} ms median stop of {len(stops)}" if stops else "no explain during the load"
    # Each round's three loads ran back to back: their ratios cancel the machine's slower drifts.
    pair = statistics.median(s / n for s, n in zip(rates["server"], rates["none"]))
    against_control = statistics.median(s / i for s, i in zip(rates["server"], rates["idle"]))
    print(f"{title:<48}{b:>15.0f} req/s{v:>15.0f} req/s {v / b:5.2f}x, median of rounds {pair:.2f}x; {stop} "
          f"(target 0.98x); control, an idle process explained instead: {c:.0f} req/s {c / b:.2f}x; "
          f"server explained against the control, median of rounds {against_control:.2f}x", flush=True)


def syscalls_cost(bin_dir, load_c, rounds, n, tmp):
    """Issue 15, the syscall recorder: (1) what `vmshim run` adds to a static Go program that exits
    at once (recording and the report, paired runs); (2) the cost per recorded call, on
    bench/load.c's mmap loop built -static (2 recorded calls an iteration), against
    `strace -f --seccomp-bpf -k` on the same work; both from the work's own wall time; (3) the
    static ex1-style server's requests/s recorded against bare, with the figures load moves less
    (CPU per request, the recorder's CPU and wake-ups during the load)."""
    vmshim = os.path.join(bin_dir, "vmshim")
    src = os.path.join(tmp, "quick.go")
    with open(src, "w") as f:
        f.write("package main\n\nfunc main() {}\n")
    quick = os.path.join(tmp, "quick-static")
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", CGO_ENABLED="0")
    subprocess.run(["go", "build", "-o", quick, src], env=env, check=True)
    out = os.path.join(tmp, "rec")
    os.makedirs(out, exist_ok=True)
    run = lambda prog: [vmshim, "run", "--out", os.path.join(out, "t.trace"), "--report", os.devnull, "--", *prog]
    added, bare = [], []
    for _ in range(max(10, rounds * 4)):
        b = spawn_wall([quick], os.environ, tmp)
        v = spawn_wall(run([quick]), os.environ, tmp)
        clear(out)
        bare.append(b)
        added.append(v - b)
    print(f"{'start: static Go, exits at once (vmshim run)':<48}{statistics.median(bare) * 1e3:>12.3f} ms bare"
          f"   +{statistics.median(added) * 1e3:.1f} ms median of pairs (target <= 20 ms)", flush=True)
    static_load = os.path.join(tmp, "load-static")
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", static_load, load_c], check=True)
    cols = [("bare", []), ("vmshim run", None)]
    if shutil.which("strace"):
        cols.append(("strace --seccomp-bpf -k", ["strace", "-f", "--seccomp-bpf", "-k", "-qq", "-o", os.devnull, "-e", "trace=memory"]))
    times = {name: [] for name, _ in cols}
    for _ in range(rounds):
        for name, prefix in cols:
            cmd = run([static_load, "mmap", str(n)]) if prefix is None else prefix + [static_load, "mmap", str(n)]
            times[name].append(timed(cmd, os.environ, tmp))
            clear(out)
    b = statistics.median(times["bare"])
    calls = 2 * n
    cells = "".join(f"{name}: {statistics.median(t):.4f}s ({(statistics.median(t) - b) / calls * 1e6:.1f} us/call)   "
                    for name, t in times.items() if name != "bare")
    print(f"{'static mmap+munmap loop, ' + str(n) + ' iterations':<48}bare {b:.4f}s   {cells}", flush=True)
    # The ex1-style server built static, under load, recorded by the syscall recorder (the
    # memory calls are rare once it serves), against bare: A B A B. Besides requests/s, which
    # the other engineers' builds on this 2-core machine move by 10-20% from run to run, the
    # figures that load moves little, taken over the load alone: the server's CPU per request
    # (every thread's schedstat), the recorder's own CPU and how often it woke (a wake-up is one
    # or a few stops: a recorded call, a new thread, a signal passed on).
    server, client = build_http(tmp, static=True)
    requests = 20000
    runs = {"bare": [], "recorded": []}
    for _ in range(rounds):
        runs["bare"].append(served_load([server], client, requests, tmp, recorded=False))
        runs["recorded"].append(served_load(run([server]), client, requests, tmp, recorded=True))
        clear(out)
    med = lambda k, i: statistics.median(r[i] for r in runs[k])
    b, v = med("bare", 0), med("recorded", 0)
    pairs = statistics.median(r[0] / a[0] for a, r in zip(runs["bare"], runs["recorded"]))
    print(f"{'static ex1-style server, ' + str(requests) + ' requests (req/s)':<48}{b:>12.0f} req/s{v:>12.0f} req/s "
          f"recorded {v / b:.2f}x, median of pairs {pairs:.2f}x (target 0.95x); server CPU "
          f"{med('bare', 1) / requests * 1e6:.1f} us/request bare, {med('recorded', 1) / requests * 1e6:.1f} recorded; "
          f"recorder {med('recorded', 2) * 1e3:.1f} ms CPU, {med('recorded', 3):.0f} wake-ups during the load", flush=True)


def task_cpu(pid):
    """CPU seconds of every live thread of `pid` (schedstat: nanoseconds on a CPU)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def wakeups(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))


def served_load(argv, client, requests, tmp, recorded):
    """One load of the static server (`argv`: bare, or under `vmshim run`; stdin a pipe kept
    open, so it serves until the end): (requests/s, the server's CPU during the load, and when
    `recorded` the recorder's CPU and its wake-ups during the load)."""
    srv = subprocess.Popen(argv, cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().split()[1]
        target = srv.pid
        if recorded:
            with open(f"/proc/{srv.pid}/task/{srv.pid}/children") as f:
                target = int(f.read().split()[0])
        before = (task_cpu(target), task_cpu(srv.pid), wakeups(srv.pid))
        out = subprocess.run([client, port, str(requests), "8"], capture_output=True, text=True, check=True)
        after = (task_cpu(target), task_cpu(srv.pid), wakeups(srv.pid))
        rate = float(out.stdout.strip())
    finally:
        srv.stdin.close()
        srv.wait(timeout=30)
    if not recorded:
        return rate, after[0] - before[0], 0.0, 0
    return rate, after[0] - before[0], after[1] - before[1], after[2] - before[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke run")
    ap.add_argument("--events", type=int, default=10_000_000, help="events in the trace the report reads (workload 5)")
    ap.add_argument("--anchors", action="store_true",
                    help="also strace -f -k, ltrace -f, heaptrack and massif --pages-as-heap where installed "
                         "(at 1/100 of the work, 1/1000 for malloc, against a bare run of that size)")
    ap.add_argument("--only", default="",
                    help="comma-separated benchmarks to run: work, events, report, http, start, loop, pieces, explain, syscalls (default: all)")
    ap.add_argument("--trace-dir", default=None,
                    help="where the loop's traces go (default: the benchmark's temporary directory; see loop_cost)")
    ap.add_argument("--bin", default=None,
                    help="use the vmshim and libvmshim.so in this directory instead of building the workspace")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only
    scale = 10 if args.quick else 1
    # (title, load.c mode, N, the fraction of N the other tools get: ltrace takes a minute for
    # 1/100 of the malloc loop)
    workloads = [
        ("mmap 64 KiB+touch+munmap, 2 threads", "mmap", 20000 // scale, 100),
        ("malloc(32)/free, 2 threads", "malloc", 10_000_000 // scale, 1000),
        ("pthread create/join", "threads", 2000 // scale, 100),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        exe, shim = build(tmp, args.bin)
        bare_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "VMSHIM_OUT")}
        shim_env = dict(bare_env, LD_PRELOAD=shim, VMSHIM_OUT=os.path.join(tmp, "vmshim.%p.trace"))
        # The tools people use instead, each where it is installed, at 1/N of the work (they are
        # 10-100,000x slower: ltrace on the malloc loop) against a bare run of the same size.
        anchors = [
            ("strace -f -k", ["strace", "-f", "-k", "-qq", "-o", "/dev/null", "-e", "trace=memory"]),
            ("ltrace -f", ["ltrace", "-f", "-o", "/dev/null"]),
            ("heaptrack", ["heaptrack", "-o", os.path.join(tmp, "heaptrack.out")]),
            ("massif pages", ["valgrind", "-q", "--tool=massif", "--pages-as-heap=yes", "--massif-out-file=/dev/null"]),
        ]
        # (column, command prefix, environment, whether it runs the whole work or the anchors'
        # fraction of it)
        if want("start"):
            start_cost(shim, bare_env, 200 // scale, tmp)
        if want("loop"):
            loop_cost(shim, bare_env, max(1, args.rounds // 2 if args.quick else args.rounds), 1000, tmp, args.trace_dir)
        if want("pieces"):
            pieces_cost(shim, bare_env, args.rounds, 1000 // scale, tmp, args.trace_dir)
        columns = [("bare", [], bare_env, True), ("vmshim", [], shim_env, True)]
        if args.anchors:
            columns.append(("bare/N", [], bare_env, False))
            for name, prefix in anchors:
                if shutil.which(prefix[0]):
                    columns.append((name + " /N", prefix, bare_env, False))
                else:
                    print(f"# {prefix[0]} is not installed: no {name} column")
        if want("work"):
            print(f"# vmshim benchmark, {args.rounds} interleaved rounds, medians of the work's own wall time")
            print(f"{'workload':<48}" + "".join(f"{name:>24}" for name, _, _, _ in columns))
        for title, mode, n, div in workloads if want("work") else []:
            times = {name: [] for name, _, _, _ in columns}
            for _ in range(args.rounds):
                for name, prefix, env, whole in columns:
                    times[name].append(timed(prefix + [exe, mode, str(max(1, n if whole else n // div))], env, tmp))
            cells = []
            for name, _, _, whole in columns:
                m = statistics.median(times[name])
                base = statistics.median(times["bare" if whole else "bare/N"])
                cells.append(f"{m:9.4f}s" + (f" {m / base:6.2f}x" if not name.startswith("bare") else " " * 8))
            if args.anchors:
                title = f"{title} (N={div})"
            print(f"{title:<48}" + "".join(f"{c:>24}" for c in cells), flush=True)
        if want("events"):
            event_cost(exe, bare_env, shim_env, args.rounds, 1_000_000 // scale, tmp)
        if want("report"):
            report_scaling(exe, shim, bare_env, args.events // scale, 3, tmp)
        if want("http") and shutil.which("go"):
            server, client = build_http(tmp)
            requests = 20000 // scale
            rps = {"bare": [], "vmshim": []}
            for _ in range(args.rounds):
                rps["bare"].append(http_rps(server, client, bare_env, requests, tmp))
                rps["vmshim"].append(http_rps(server, client, shim_env, requests, tmp))
            b, v = statistics.median(rps["bare"]), statistics.median(rps["vmshim"])
            title = f"ex1-style server, {requests} requests (req/s)"
            print(f"{title:<48}{b:>15.0f} req/s{v:>15.0f} req/s {v / b:5.2f}x", flush=True)
        if want("syscalls") and shutil.which("go"):
            syscalls_cost(os.path.dirname(shim), os.path.join(ROOT, "bench", "load.c"), args.rounds, 2000 // scale, tmp)
        if want("explain") and shutil.which("go"):
            server, client = build_http(tmp)
            explain_cost(shim, server, client, bare_env, args.rounds, 100_000 // scale, tmp)


if __name__ == "__main__":
    sys.exit(main())
