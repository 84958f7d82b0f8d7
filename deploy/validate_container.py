#!/usr/bin/env python3
"""Checks deploy/container/Containerfile offline, without a container builder.

Usage: validate_container.py CONTAINERFILE HEALTHGATE_BINARY

1. Parsed by BuildKit's own Dockerfile parser (PyPI's `dockerfile`, which wraps
   github.com/moby/buildkit's parser): a syntax error or an unknown instruction fails.
2. Every base image has an explicit tag (no implicit `latest`); every `COPY --from` names an
   earlier stage.
3. The builder's Rust (the `rust:X.Y` tag) is at least the newest `rust-version` in the lock
   file (`cargo metadata --locked`), ours included: the build cannot fail on a too-old
   compiler. (Our own code against our `rust-version` is clippy's `incompatible_msrv`, run in
   .ci/run with `-D warnings`.)
4. The build stage's `RUN cargo build … --release … --bin healthgate` produces the file the
   runtime stage copies (`WORKDIR/target/release/healthgate`), the entrypoint is the copied
   binary, the runtime user is not root, and every port the default command listens on is
   `EXPOSE`d.
5. The default command is accepted by the real binary: it is run (its listen addresses moved to
   127.0.0.1:0) until it prints its listening lines.
6. The build context, as `.dockerignore` prunes it, is small (no `target/`) and holds everything
   the build needs: `cargo check --locked --offline --bin healthgate` runs in a copy of it.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import dockerfile

CONTEXT_LIMIT = 64 << 20  # bytes; the sources are a few MB, one build's target/ is gigabytes


def fail(message):
    sys.exit(f"{sys.argv[1]}: {message}")


def version(text):
    """`1.88` and `1.88.0` alike: three numbers."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def ignore_patterns(root):
    """`.dockerignore` (the subset of its syntax our file uses: paths and globs, `#` comments)."""
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        fail(".dockerignore is missing: the build context would include target/")
    patterns = []
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            if line.startswith("!"):
                fail(".dockerignore exceptions (!) are not emulated by this check")
            patterns.append(line.strip("/"))
    return patterns


def ignored(relative, patterns):
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def copy_context(root, destination):
    patterns = ignore_patterns(root)
    size = 0
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = [d for d in dirs if not ignored(rel_dir + d, patterns)]
        for name in files:
            rel = rel_dir + name
            if ignored(rel, patterns):
                continue
            source = os.path.join(root, rel)
            if os.path.islink(source):
                continue
            size += os.path.getsize(source)
            if size > CONTEXT_LIMIT:
                fail(f"the build context is over {CONTEXT_LIMIT >> 20} MiB (at {rel}): "
                     "add what it should not hold to .dockerignore")
            target = os.path.join(destination, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    return size


def main():
    containerfile, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    root = os.path.abspath(os.path.join(os.path.dirname(containerfile), "..", ".."))
    try:
        commands = dockerfile.parse_file(containerfile)
    except dockerfile.GoParseError as e:
        fail(f"does not parse: {e}")

    stages, current = {}, None
    for c in commands:
        if c.cmd == "FROM":
            image = c.value[0]
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else None
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                fail(f"line {c.start_line}: {image} has no tag")
            current = {"image": image, "workdir": "/", "copies": [], "runs": [], "user": None,
                       "expose": [], "entrypoint": None, "cmd": None}
            stages[name or f"#{len(stages)}"] = current
        elif current is None:
            if c.cmd != "ARG":
                fail(f"line {c.start_line}: {c.cmd} before FROM")
        elif c.cmd == "WORKDIR":
            current["workdir"] = os.path.join(current["workdir"], c.value[0])
        elif c.cmd == "COPY":
            source_stage = next((f.split("=", 1)[1] for f in c.flags if f.startswith("--from=")), None)
            if source_stage is not None and source_stage not in stages:
                fail(f"line {c.start_line}: COPY --from={source_stage}: no such earlier stage")
            current["copies"].append((source_stage, c.value[:-1], c.value[-1]))
        elif c.cmd == "RUN":
            current["runs"].append(" ".join(c.value))
        elif c.cmd == "USER":
            current["user"] = c.value[0]
        elif c.cmd == "EXPOSE":
            current["expose"] += [p.split("/")[0] for p in c.value]
        elif c.cmd in ("ENTRYPOINT", "CMD"):
            if not c.json:
                fail(f"line {c.start_line}: {c.cmd} in shell form (signals would go to /bin/sh)")
            current[c.cmd.lower()] = list(c.value)

    runtime = list(stages.values())[-1]
    copied = [(stage, sources, dest) for stage, sources, dest in runtime["copies"] if stage]
    if len(copied) != 1 or len(copied[0][1]) != 1:
        fail("the runtime stage should copy exactly the binary from the build stage")
    build_name, (built_path,), installed = copied[0]
    build = stages[build_name]

    # 3. The builder's Rust.
    match = re.match(r"(?:.*/)?rust:(\d+\.\d+(?:\.\d+)?)", build["image"])
    if not match:
        fail(f"the build stage's image {build['image']} is not rust:X.Y")
    builder_rust = version(match.group(1))
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1"], cwd=root,
        check=True, capture_output=True, text=True).stdout)
    needed = max(((version(p["rust_version"]), p["name"]) for p in metadata["packages"]
                  if p.get("rust_version")), default=((0, 0, 0), "nothing"))
    if needed[0] > builder_rust:
        fail(f"{needed[1]} needs Rust {'.'.join(map(str, needed[0]))}, "
             f"the builder has {match.group(1)}")

    # 4. What is built is what is copied and run.
    builds = [r for r in build["runs"] if re.search(r"\bcargo build\b", r)]
    if not builds or not all(f in builds[-1] for f in ("--release", "--locked", "--bin healthgate")):
        fail("the build stage should run `cargo build --release --locked --bin healthgate`")
    produced = os.path.join(build["workdir"], "target/release/healthgate")
    if os.path.normpath(built_path) != produced:
        fail(f"the runtime stage copies {built_path}, the build produces {produced}")
    if runtime["entrypoint"] != [installed]:
        fail(f"the entrypoint {runtime['entrypoint']} is not the copied binary {installed}")
    if runtime["user"] in (None, "root", "0"):
        fail("the runtime stage runs as root")
    cmd = runtime["cmd"] or []
    listened = [a.rsplit(":", 1)[1] for a in cmd if re.fullmatch(r"[0-9.\[\]:a-f]+:\d+", a)]
    missing = [p for p in listened if p not in runtime["expose"]]
    if missing:
        fail(f"the default command listens on {missing}, which are not EXPOSEd")

    # 5. The default command, run for real.
    args = [re.sub(r":\d+$", ":0", a.replace("0.0.0.0", "127.0.0.1")) for a in cmd]
    proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            if " listening on " in line:
                lines.append(line.strip())
            if len(lines) == len(listened):
                break
        if len(lines) != len(listened):
            fail(f"the default command {cmd} exited without listening: {proc.stderr.read()[-500:]}")
    finally:
        proc.kill()
        proc.wait()

    # 6. The context, as .dockerignore prunes it, builds.
    with tempfile.TemporaryDirectory() as context:
        size = copy_context(root, context)
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(root, "target"))
        checked = subprocess.run(
            ["cargo", "check", "--quiet", "--locked", "--offline", "--bin", "healthgate"],
            cwd=context, env=env, capture_output=True, text=True)
        if checked.returncode != 0:
            fail(f"the pruned build context does not build:\n{checked.stderr[-2000:]}")

    print(f"{containerfile}: valid (BuildKit parser; builder Rust {match.group(1)} >= "
          f"{'.'.join(map(str, needed[0]))} needed by {needed[1]}; context {size >> 10} KiB; "
          f"default command listens on {', '.join(lines)})")


if __name__ == "__main__":
    main()
