"""The bookkeeping of a sweep's run folders (experiments.py's cells, analyze.py's --folds runs):
a finished run is reused only when it was made with the same settings, an interrupted one resumes."""
import json
import os

import cli


NO_EFFECT = ("quiet", "workers", "threads", "cache_dir", "save_dir", "resume", "overwrite", "keep_last")  # change no number


def comparable(record, parse=None):
    """A run's settings (a dict of train.py's options, or an argument list that `parse` turns into
    one) without the options that change no result, so that adding --quiet is not other settings."""
    if not isinstance(record, dict):
        try:
            record = parse(record)
        except (SystemExit, TypeError):  # arguments of another version of train.py, or no parser
            return record
    return {k: v for k, v in record.items() if k not in NO_EFFECT}


def stored_result(folder, key, record, label, parse=None):
    """The result.json of a finished run in `folder` (None when there is none). A run made with other
    settings is refused, never reported under this command's: its numbers answer another question."""
    done = os.path.join(folder, "result.json")
    if not os.path.isfile(done):
        return None
    try:
        with open(done) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        raise cli.UsageError(f"{done} is unreadable ({type(e).__name__}); delete it to run {label} again") from None
    if comparable(stored.get(key), parse) != comparable(record, parse):
        raise cli.UsageError(f"{folder} holds {label} run with other settings ({stored.get(key)}): delete it, "
                             f"or choose another --out, to run it with these")
    return stored


def run_in_folder(folder, key, record, run, label, parse=None):
    """The bookkeeping of one run folder of a sweep (experiments.py's cells, analyze.py --folds):
    a finished run (FOLDER/result.json) of the same settings is not run again and its stored result
    is returned; an interrupted one (FOLDER/last.pt) resumes. `run(resume)` (resume: the last.pt or
    None) trains and returns a dict, stored with {key: record} in result.json, so running the same
    command again continues a sweep. `parse`: see comparable."""
    stored = stored_result(folder, key, record, label, parse)
    if stored is not None:
        print(f"== {label}: finished before, skipped")
        return stored
    last = os.path.join(folder, "last.pt")
    resume = last if os.path.isfile(last) else None
    print(f"== {label}{': resuming' if resume else ''}", flush=True)
    result = {key: record, **run(resume)}
    os.makedirs(folder, exist_ok=True)
    cli.write_json(os.path.join(folder, "result.json"), result)
    return result
