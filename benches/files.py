"""Time to first query over many small files vs the same rows in one file, on local disk and on
S3 (SeaweedFS on 127.0.0.1): the baseline compaction will improve on.

Each run is a fresh `tokenledger query` process (open the location, list, check every footer,
scan), timed from start to exit. Runs are interleaved; the median of RUNS is reported.

usage: files.py TOKENLEDGER SOURCE_DATA OUT_DIR [FILES] [RUNS]
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SQL = "SELECT count(*), sum(input_tokens) FROM spans"
KEY, SECRET, BUCKET = "bench", "bench-secret", "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_layouts(source: str, out: str, files: int) -> tuple:
    """The spans of `source` as `files` Parquet files and as one file (zstd, like `gen`)."""
    spans = ds.dataset(os.path.join(source, "spans"), format="parquet").to_table()
    many, one = os.path.join(out, f"files-{files}"), os.path.join(out, "files-1")
    for layout in (many, one):
        shutil.rmtree(layout, ignore_errors=True)
        os.makedirs(os.path.join(layout, "spans"))
    step = -(-spans.num_rows // files)
    for i in range(files):
        part = spans.slice(i * step, step)
        pq.write_table(part, os.path.join(many, "spans", f"part-{i:05}.parquet"), compression="zstd")
    pq.write_table(spans, os.path.join(one, "spans", "all.parquet"), compression="zstd")
    return spans.num_rows, many, one


def start_s3(weed: str, work: str) -> tuple:
    port = free_port()
    args = [weed, "mini", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-bucket={BUCKET}", f"-s3.port={port}",
            # Sized from the disk's total, volumes are 1 GiB and none fit when little is free.
            "-master.volumeSizeLimitMB=64"]
    for flag in ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc"]:
        args.append(f"-{flag}={free_port()}")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    log = open(os.path.join(work, "weed.log"), "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=log, cwd=work)
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=f"127.0.0.1:{port}",
                           scheme="http", region="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            with fs.open_output_stream(f"{BUCKET}/_ready"):
                pass
            return proc, fs, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def upload(fs, local: str, prefix: str):
    for root, _, names in os.walk(local):
        for name in names:
            path = os.path.join(root, name)
            key = f"{BUCKET}/{prefix}/{os.path.relpath(path, local)}"
            with open(path, "rb") as src, fs.open_output_stream(key) as dst:
                dst.write(src.read())


def time_query(binary: str, data: str, env: dict) -> tuple:
    started = time.perf_counter()
    out = subprocess.run([binary, "query", "--data", data, "--format", "csv", SQL],
                         capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{data}: {out.stderr}")
    return elapsed, out.stdout.splitlines()[1]


def main():
    binary, source, out = sys.argv[1:4]
    files = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    rows, many, one = write_layouts(source, out, files)
    work = tempfile.mkdtemp(prefix="tokenledger-files-bench-")
    weed = os.path.join(os.path.dirname(sys.executable), "weed")
    proc, fs, endpoint = start_s3(weed, work)
    try:
        upload(fs, many, f"files-{files}")
        upload(fs, one, "files-1")
        s3_env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                      AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
        cases = [
            (f"local, {files} files", many, os.environ),
            ("local, 1 file", one, os.environ),
            (f"S3, {files} files", f"s3://{BUCKET}/files-{files}", s3_env),
            ("S3, 1 file", f"s3://{BUCKET}/files-1", s3_env),
        ]
        times = {name: [] for name, _, _ in cases}
        answers = set()
        for round in range(runs + 1):  # round 0 warms the page cache and the server
            for name, data, env in cases:
                elapsed, answer = time_query(binary, data, env)
                answers.add(answer)
                if round:
                    times[name].append(elapsed)
        if len(answers) != 1:
            raise RuntimeError(f"layouts disagree: {answers}")
        print(f"{rows} spans; answer {answers.pop()}; median of {runs} interleaved runs, whole process\n")
        print("| layout | time to first query |")
        print("|---|---|")
        for name, _, _ in cases:
            print(f"| {name} | {statistics.median(times[name]) * 1e3:.0f} ms |")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
