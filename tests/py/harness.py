"""Shared by the end-to-end tests: where the repository is, the environment OpenMPI needs here
(root, oversubscription, one thread per rank), running a command and training with a report."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def with_fault(cmd, after_s, fault, timeout=120, ready="origami train:"):
    """Starts cmd (in the repository root), waits until its stdout shows `ready` (the trainer's
    banner: the run is past its setup, so the fault hits a training run, however slow the machine's
    start-up), calls fault(pid) after_s seconds later and waits for cmd to end; returns
    (returncode, stdout, stderr, seconds from the fault to the end)."""
    import tempfile
    import time
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, env=MPI_ENV, cwd=ROOT)
        deadline = time.time() + timeout
        while ready and proc.poll() is None and time.time() < deadline:
            out_f.seek(0)
            if ready in out_f.read():
                break
            time.sleep(0.1)
        time.sleep(after_s)
        fault(proc.pid)
        t0 = time.time()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        dt = time.time() - t0
        out_f.seek(0)
        err_f.seek(0)
        return proc.returncode, out_f.read(), err_f.read(), dt


def mpi(n, cmd):
    """cmd under mpirun with n ranks, free to use every core."""
    return ["mpirun", "-np", str(n), "--bind-to", "none"] + list(cmd)


def run(cmd, timeout=600, check=True):
    """Runs cmd in the repository root; with check, a failure ends the test with its output."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV, timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def train(binary, work, name, args, ranks=0, layout=None):
    """origami train on the corpus with configs/tiny.json; returns (report, stdout)."""
    report = os.path.join(work, name + ".json")
    cmd = [binary, "train", "--config", os.path.join(ROOT, "configs/tiny.json"),
           "--data", os.path.join(ROOT, "data/moby_dick.txt"),
           "--tokenizer", os.path.join(ROOT, "data/tokenizer.model"),
           "--report", report, "--log-every", "0"] + list(args)
    if layout:
        cmd += ["--layout", layout]
    r = run(mpi(ranks, cmd) if ranks else cmd)
    with open(report) as f:
        return json.load(f), r.stdout


def rel(a, b):
    """Worst relative difference of two loss lists."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def same_files(a, b):
    """Whether two checkpoint directories hold byte-identical weights and optimizer state."""
    return all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
               for f in ("model.safetensors", "optimizer.safetensors"))
