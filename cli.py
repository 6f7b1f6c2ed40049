"""What every script shares at its edges: the argument parser, the usage error, option checks,
the entry point that turns bad input into one line, progress bars, and atomic writes.

Every script builds its options on `cli.ArgumentParser` (defaults in --help, a mistyped option
in one line), ends with `cli.run_main(main, parser.parse_args)`, raises `UsageError` (or a
subclass: `CheckpointError`, `TrainingError`) for bad input, and writes every file through
`atomic_write`, so a crash or a full disk never leaves a half-written output.
"""
import argparse
import contextlib
import copy
import difflib
import fcntl
import json
import os
import signal
import sys
import tempfile
import threading


class UsageError(Exception):
    """Bad input (an option value, a missing or unreadable file, unusable data): one line, exit 2."""


def one_line(text):
    """`text` with its control characters escaped (a newline as \\n): an error or a warning quoting user
    data (a file name, a CSV cell) stays one line whatever that data holds."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(text))


def warn(msg):
    print(f"warning: {one_line(msg)}", file=sys.stderr)


def error(msg):
    print(f"error: {one_line(msg)}", file=sys.stderr)


def plural(n, word):
    """`1 thread`, `2 threads`, `3 classes`: a count with its noun."""
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with every option's default, except where there is none to show (None, a flag that is
    off, an empty list) or the help text already says what the default is in its own words."""

    def _format_action(self, action):
        if action.help is None and self._shows_default(action):  # an option without help text: its default alone
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        return super()._get_help_string(action) if self._shows_default(action) else action.help or ""

    @staticmethod
    def _shows_default(action):
        default = action.default
        return not (default is None or default is False or default == [] or default == argparse.SUPPRESS
                    or "default" in (action.help or ""))


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser: defaults in --help (HelpFormatter), and a bad option is one line
    (`error: unrecognized arguments: --epoch 3 (did you mean --epochs?)`, and where --help is),
    exit 2, not the whole usage first."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}{self._did_you_mean(message)}; "
                     f"{self.prog} --help lists the options\n")

    def _did_you_mean(self, message):
        """` (did you mean --epochs?)` for the unrecognized options that are close to a known one."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        known = [s.lstrip("-") for a in self._actions for s in a.option_strings if s.startswith("--")]
        guesses = {}
        for word in message.split(": ", 1)[1].split():
            name = word.split("=", 1)[0]
            close = difflib.get_close_matches(name.lstrip("-"), known, n=1) if name.startswith("-") else []
            if close:
                guesses[name] = "--" + close[0]
        if len(guesses) == 1:
            return f" (did you mean {next(iter(guesses.values()))}?)"
        return f" (did you mean {', '.join(f'{right} for {wrong}' for wrong, right in guesses.items())}?)" if guesses else ""


def progress(iterable, desc, quiet=False, **kwargs):
    """A progress bar on stderr over a slow loop, drawn as train.py draws its epochs' (left off when
    done), but only where someone watches: not with --quiet, nor when stderr is not a terminal
    (a log file would fill with redraws)."""
    from tqdm import tqdm  # here, not at import: most of cli's users never draw one
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty(), **kwargs)


def check_args(args, *rules):
    """Bad option values: one line (UsageError) before anything is loaded or trained. A rule is
    (option dest, ok, what the value must be)."""
    for name, ok, need in rules:
        if not ok:
            raise UsageError(f"--{name.replace('_', '-')} must be {need}, got {getattr(args, name)}")


def check_folder_arg(path, option):
    """An output folder option (--out, --save-dir, --cache-dir) that names an existing file."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file, not a folder")


def memory_available():
    """Bytes of memory this machine can give a new allocation (MemAvailable where Linux tells it)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(nbytes, what, available=None, where="this machine"):
    """Refuse, before the work starts, what cannot fit in memory (the host's, or `available` bytes of
    `where`, a GPU): one line with the estimate, never a MemoryError traceback or minutes of swapping."""
    available = memory_available() if available is None else available
    if nbytes > 0.9 * available:
        raise UsageError(f"{what} needs about {nbytes / 2**30:.1f} GiB of memory; {where} has "
                         f"{available / 2**30:.1f} GiB available")


def check_writable(path, option):
    """Refuse now, not after the work, an output file whose folder cannot take a file: a probe file
    is made there and removed."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)  # an output's folder is made, as the scripts make their --out folders
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write into {folder} ({e.strerror})") from None


def printable_stdout():
    """A file name that is not valid UTF-8 is printed escaped, not a UnicodeEncodeError."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def run_main(main, parse_args, interrupted=None):
    """A script's entry point: main(parse_args()). Bad input (UsageError) and failed file
    operations (OSError: a full disk, an unwritable folder) are one line `error: ...` on stderr
    and exit code 2; Ctrl-C is `interrupted` (plus `interrupted(exception)`, what to do next) and
    exit code 130, what a shell reports for a program stopped by Ctrl-C. Never a traceback."""
    printable_stdout()
    try:
        return main(parse_args())
    except KeyboardInterrupt as e:
        hint = interrupted(e) if interrupted else None
        print(f"interrupted{f': {hint}' if hint else ''}", file=sys.stderr)
        sys.exit(130)
    except (UsageError, OSError) as e:
        error(e)
        sys.exit(2)


@contextlib.contextmanager
def atomic_write(path, mode="w", fsync=False):
    """Open a temp file beside `path` and rename it over `path` when the block ends without an
    error, so a crash, a full disk or a bad character never leaves a half-written file (and an
    older `path` stays as it was). Text is UTF-8; file names that are not valid UTF-8 (surrogate
    escapes) are written back as their original bytes. The file gets the usual mode (umask)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def folder_lock(folder, option, user):
    """Hold `folder` (created if missing) for the block: a second process that would write the same
    outputs there at the same time is refused with one line, instead of both mixing their files.
    The lock is the kernel's (flock on the folder itself: no lock file, released however the
    process ends); a folder this call created and nothing filled is removed again."""
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise UsageError(f"cannot create {option} {folder}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{option} {folder} is in use by another {user} (started earlier and still "
                             f"running): wait for it, or choose another {option}") from None
        yield
    finally:
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when still empty


def write_json(path, obj):
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)


def save_figure(fig, path, **kwargs):
    """matplotlib's savefig through `atomic_write` (the format from the file extension); closes `fig`."""
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", **kwargs)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # synth.py draws without pyplot
            sys.modules["matplotlib.pyplot"].close(fig)


class SigintStop:
    """While `armed` (the epochs), the first Ctrl-C (SIGINT) only sets `requested`: the loop
    finishes its optimizer step, writes last.pt and stops. Otherwise, and on a second Ctrl-C,
    SIGINT raises KeyboardInterrupt as usual. A context manager, so the previous handler is back
    however the block ends (experiments.py calls train.main in-process)."""

    def __init__(self, enabled=True):
        # only the main thread may set handlers; under torchrun, Ctrl-C reaches every process
        # at a different step and torchrun stops them all, so there the default is kept
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.armed = self.requested = False

    def __enter__(self):
        if self.enabled:
            self.pid = os.getpid()
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if os.getpid() != self.pid:
            # a forked DataLoader worker inherits this handler, and a terminal's Ctrl-C reaches
            # the whole process group: the main process stops the run, the worker carries on
            return
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the handler may run in the middle of another write to stderr
        os.write(2, b"\nCtrl-C: stopping after this step and saving last.pt (Ctrl-C again to abort)\n")
