"""Benchmarks of the Dockerfile front end, next to ``dockerfile-parse`` (PyPI) in the same run.

Parse of a generated 10,000-instruction Dockerfile, a fresh ``pybuild dockerfile parse`` of a
20-line file, and ``.dockerignore`` over a generated 100,000-file tree with 20 patterns.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.imagebuild.dockerfile import lint, parse, typed  # noqa: E402
from builder.imagebuild.ignore import IgnoreMatcher  # noqa: E402

SMALL = """\
# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \\
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \\
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app
ENV A=1 B="two words"
LABEL org.opencontainers.image.title="demo"
EXPOSE 8080
HEALTHCHECK --interval=30s CMD ["/app", "health"]

FROM gcr.io/distroless/static AS final
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
"""


def big_dockerfile(instructions: int = 10_000) -> str:
    """A Dockerfile of *instructions* instructions mixing every form the parser meets."""
    parts = ["# syntax=docker/dockerfile:1\nARG BASE=alpine:3.19\n"]
    count = 1
    stage = 0
    while count < instructions:
        if count % 500 == 1:
            parts.append(f"FROM $BASE AS stage{stage}\n")
            stage += 1
            count += 1
            continue
        k = count % 10
        if k == 0:
            parts.append(
                f"RUN apt-get update && \\\n    apt-get install -y pkg{count} && \\\n    rm -rf /var/lib/apt/lists/*\n"
            )
        elif k == 1:
            parts.append(f'RUN ["/bin/sh", "-c", "echo {count}"]\n')
        elif k == 2:
            parts.append(f'ENV K{count}="value {count}" PATH=/opt/{count}/bin:$PATH\n')
        elif k == 3:
            parts.append(f"COPY --chown=1000:1000 --chmod=0644 src/{count} /app/{count}/\n")
        elif k == 4:
            parts.append(
                f'LABEL com.example.n{count}="{count}" \\\n      com.example.kind="bench"\n'
            )
        elif k == 5:
            parts.append(
                f"RUN --mount=type=cache,target=/root/.cache <<EOF\necho {count}\nmake -j2\nEOF\n"
            )
        elif k == 6:
            parts.append(f"WORKDIR /work/{count}\n")
        elif k == 7:
            parts.append(f"ARG A{count}=default{count}\n")
        elif k == 8:
            parts.append(f"EXPOSE {8000 + count % 1000}/tcp\n")
        else:
            parts.append(f'CMD ["app", "--id={count}"]\n')
        count += 1
    return "".join(parts)


def best_of(fn: object, runs: int) -> float:
    """The best CPU time (user+system of this process) of *runs* calls: on a shared, busy
    machine the wall clock mostly measures the other processes."""
    assert callable(fn)
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def child_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, stdout) of one run of *argv* in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, out.stdout


def bench_big_parse() -> None:
    text = big_dockerfile()
    lines = text.count("\n")
    tree = parse(text)
    assert len(tree.nodes) == 10_000, len(tree.nodes)
    ours_parse = best_of(lambda: parse(text), 5)
    ours_typed = best_of(lambda: typed(parse(text)), 5)
    ours_lint = best_of(lambda: lint(parse(text)), 3)
    print(
        f"10,000-instruction Dockerfile ({lines} lines, {len(text) / 1024:.0f} KiB; best CPU time):"
    )
    print(f"  pybuild parse (syntax tree)      {ours_parse * 1000:8.1f} ms")
    print(f"  pybuild parse + typed level      {ours_typed * 1000:8.1f} ms")
    print(f"  pybuild parse + lint             {ours_lint * 1000:8.1f} ms")
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        print("  dockerfile-parse                 not installed")
        return

    def peer() -> None:
        p = DockerfileParser(fileobj=io.StringIO(text), env_replace=False)
        assert len(p.structure) > 9000

    def peer_env() -> None:
        p = DockerfileParser(fileobj=io.StringIO(text))
        p.structure  # noqa: B018 - the property does the parse

    peer_time = best_of(peer, 3)
    print(f"  dockerfile-parse .structure      {peer_time * 1000:8.1f} ms   (env_replace=False)")
    peer_env_time = best_of(peer_env, 3)
    print(
        f"  dockerfile-parse .structure      {peer_env_time * 1000:8.1f} ms   (default, env substitution)"
    )
    print(f"  ratio dockerfile-parse/pybuild   {peer_time / ours_parse:8.2f}x   (syntax trees)")


def bench_fresh_process() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Dockerfile"
        path.write_text(SMALL)
        assert SMALL.count("\n") == 20
        pybuild = ROOT / ".venv" / "bin" / "pybuild"
        env = dict(os.environ)
        probe = (
            "import time; t = time.process_time()\n"
            "from builder.imagebuild.dockerfile import parse\n"
            f"tree = parse(open({str(path)!r}).read())\n"
            "print((time.process_time() - t) * 1000)"
        )
        print("Fresh process, 20-line Dockerfile (best of 10; CPU time, wall in brackets):")
        for label, bytecode in (("bytecode cached", True), ("PYTHONDONTWRITEBYTECODE=1", False)):
            run_env = dict(env)
            if bytecode:
                run_env.pop("PYTHONDONTWRITEBYTECODE", None)
                subprocess.run(
                    [sys.executable, "-c", probe], env=run_env, capture_output=True, check=True
                )
            else:
                run_env["PYTHONDONTWRITEBYTECODE"] = "1"
            inproc = [
                float(child_cpu([sys.executable, "-c", probe], run_env)[2]) for _ in range(10)
            ]
            cli = [
                child_cpu([str(pybuild), "dockerfile", "parse", str(path)], run_env)
                for _ in range(10)
            ]
            bare = [child_cpu([sys.executable, "-c", "pass"], run_env) for _ in range(10)]
            print(f"  [{label}]")
            print(
                f"    import + grammar load + parse, in process        {min(inproc):6.1f} ms"
                f"  (median {statistics.median(inproc):.1f})"
            )
            print(
                f"    `pybuild dockerfile parse FILE`, whole process     "
                f"{min(c for c, _, _ in cli) * 1000:6.1f} ms  [{min(w for _, w, _ in cli) * 1000:.1f}]"
            )
            print(
                f"    `python -c pass`, whole process                   "
                f"{min(c for c, _, _ in bare) * 1000:6.1f} ms  [{min(w for _, w, _ in bare) * 1000:.1f}]"
            )
        no_cache = {**env, "PYBUILD_GRAMMAR_CACHE": ""}
        no_cache.pop("PYTHONDONTWRITEBYTECODE", None)
        uncached = [float(child_cpu([sys.executable, "-c", probe], no_cache)[2]) for _ in range(10)]
        print(f"    same, grammar cache disabled (tables rebuilt)     {min(uncached):6.1f} ms")
        lark_probe = "import time; t = time.process_time()\nimport lark\nprint((time.process_time() - t) * 1000)"
        lark_times = [
            float(child_cpu([sys.executable, "-c", lark_probe], env)[2]) for _ in range(10)
        ]
        print(f"    of which `import lark` alone                      {min(lark_times):6.1f} ms")


PATTERNS = [
    "# generated by bench_parse.py",
    ".git",
    "**/node_modules",
    "**/*.log",
    "**/*.tmp",
    "build",
    "dist/**",
    "*.md",
    "!README.md",
    "docs/**/*.png",
    "**/__pycache__",
    "**/.cache",
    "vendor/*/testdata",
    "coverage",
    "*.swp",
    "tmp?",
    "src/**/gen_*",
    "!src/keep/gen_keep.go",
    "secrets[0-9]",
    "**/.DS_Store",
    "out/",
]


def make_tree(root: Path, files: int = 100_000) -> int:
    """A context of *files* files: sources, node_modules and build output to prune."""
    made = 0
    layout = [
        ("src/pkg{a}/sub{b}", "file{c}.go", 300, 10, 8),  # 24,000
        ("node_modules/mod{a}/lib{b}", "index{c}.js", 200, 10, 15),  # 30,000 (pruned)
        ("build/obj{a}/part{b}", "o{c}.o", 100, 10, 10),  # 10,000 (pruned)
        ("docs/section{a}/img{b}", "pic{c}.png", 50, 10, 10),  # 5,000
        ("vendor/v{a}/testdata", "case{c}.txt", 100, 1, 50),  # 5,000 (pruned)
        ("app/mod{a}/logs{b}", "run{c}.log", 100, 5, 10),  # 5,000
        ("lib/l{a}/d{b}", "x{c}.py", 210, 10, 10),  # 21,000
    ]
    for pattern, name, na, nb, nc in layout:
        for a in range(na):
            for b in range(nb):
                directory = root / pattern.format(a=a, b=b)
                directory.mkdir(parents=True, exist_ok=True)
                for c in range(nc):
                    if made >= files:
                        return made
                    (directory / name.format(c=c)).touch()
                    made += 1
    (root / "README.md").touch()
    (root / "CHANGES.md").touch()
    return made + 2


def bench_dockerignore() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pybuild-bench-ignore-"))
    try:
        start = time.perf_counter()
        total = make_tree(tmp)
        made_in = time.perf_counter() - start
        matcher = IgnoreMatcher.from_lines(PATTERNS)
        assert len(matcher.patterns) == 20
        start = time.process_time()
        included = sum(1 for _ in matcher.walk(tmp))
        walk_time = time.process_time() - start
        visited = matcher.visited
        # the same answer without pruning: every path walked, every path matched
        start = time.process_time()
        naive = 0
        for dirpath, dirnames, filenames in os.walk(tmp):
            rel = os.path.relpath(dirpath, tmp)
            for name in dirnames + filenames:
                path = name if rel == "." else f"{rel}/{name}"
                if not matcher.matches(path):
                    naive += 1
        naive_time = time.process_time() - start
        listing = 0
        start = time.process_time()
        for _, dirnames, filenames in os.walk(tmp):
            listing += len(dirnames) + len(filenames)
        listing_time = time.process_time() - start
        print(
            f".dockerignore, {len(matcher.patterns)} patterns, tree of {total:,} files (made in {made_in:.1f} s; CPU time):"
        )
        print(
            f"  pybuild IgnoreMatcher.walk       {walk_time * 1000:8.1f} ms   visited {visited:,} entries, {included:,} included"
        )
        print(
            f"  matches() on every entry         {naive_time * 1000:8.1f} ms   ({listing:,} entries, no pruning)"
        )
        print(f"  os.walk alone (no matching)      {listing_time * 1000:8.1f} ms")
        # pruning must not change the answer for anything kept
        assert included == naive, (included, naive)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    bench_big_parse()
    print()
    bench_fresh_process()
    print()
    bench_dockerignore()


if __name__ == "__main__":
    main()
