"""Runs a sweep (a base config and named overrides) and gathers the runs into one table.

    python -m experiments.sweep --sweep=ablations --root=runs/ablations
    python -m experiments.sweep --sweep=lrn --root=runs/ablations      # baseline + no_lrn only
    python -m experiments.sweep --sweep=ablations --root=runs/ablations --gather_only
    python -m experiments.sweep --sweep=lrn --root=runs/lrn_paper --config=configs/paper.py \
        --config.num_epochs=20     # another base config, and a field changed for every run
    python -m experiments.sweep --sweep=ablations --root=/shared/runs/ablations \
        --config=configs/paper.py --launcher=slurm --nodes=1 --gpus_per_node=2 --time=48:00:00
    python -m experiments.sweep --sweep=ablations --root=/shared/runs/ablations \
        --config=configs/paper.py --status     # where each run stands, one line each

With --launcher=local (the default) each run is
`python -m alexnet_jax.main --config=BASE --config.FIELD=VALUE ... --workdir=ROOT/NAME` in its own
process (its log in ROOT/NAME/log.txt), one after another or --parallel at once. A run
whose workdir already holds its final record (ROOT/NAME/run.json) is not run again, so sweeps
that share a root share their baseline, and an interrupted sweep resumes where it stopped (an
unfinished run resumes from its last checkpoint). A finished run made from another base config
(--config=FILE) or with other overrides (--config.FIELD=VALUE, given to every run) is never passed
off as this sweep's: the sweep stops before running anything and names it; give another --root,
or delete the run to train it again. The sweeps are defined in experiments/ablations.py.

With --launcher=slurm each run is one job of experiments/slurm/train.sbatch, on the nodes, GPUs,
time and partition given once for the sweep; a run finished, running (its workdir's lock) or
queued (SLURM's queue) is not submitted again, and the job ids are kept in ROOT/jobs.json. The
same command, run again, submits what is missing (a failed or timed-out run resumes from its
checkpoint) and writes the table once every run has finished. --status prints where each run
stands, for either launcher (experiments/launcher.py says how it is read).

The table (ROOT/results.csv and ROOT/results.md) has, per run, the final training and validation
errors, the best validation error, the change against the run named `baseline`, the epochs, the
parameter count and the wall time.
"""

import concurrent.futures
import csv
import json
import os
import subprocess
import sys
import time

from absl import app, flags

from alexnet_jax import cli, logs, metric_writer
from experiments import ablations
from experiments import launcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flag_value(value) -> str:
  """A config value as ml_collections' command-line parser reads it back."""
  if isinstance(value, (tuple, list)):
    return '(' + ''.join(f'{v!r},' for v in value) + ')'
  return str(value)


def override_flags(overrides: dict) -> list[str]:
  return [f'--config.{k}={flag_value(v)}' for k, v in overrides.items()]


def command(base: str, overrides: dict, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'alexnet_jax.main', f'--config={base}', f'--workdir={workdir}',
          *override_flags(overrides)]


def _as_json(value):
  return json.loads(json.dumps(value))  # tuples as lists, as run.json holds them


def mismatch(name: str, base: str, overrides: dict, root: str) -> str | None:
  """How ROOT/NAME's finished run differs from the run asked for (base, overrides), or None."""
  record_path = os.path.join(root, name, 'run.json')
  if not os.path.exists(record_path):
    return None
  with open(record_path) as f:
    record = json.load(f)
  old, new = record.get('overrides', {}), _as_json(overrides)
  saved_base = record.get('base', base)  # records written before the base was kept: the same
  differing = [f'base {saved_base} (this sweep: {base})'] if saved_base != base else []
  differing += [f'{k}={old.get(k, "unset")} (this sweep: {new.get(k, "unset")})'
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  return ', '.join(differing) or None


def train(base: str, overrides: dict, workdir: str, env: dict | None = None
          ) -> tuple[list[str], int, float]:
  """Trains (or resumes) one run in its own process, its output appended to WORKDIR/log.txt;
  returns (command, exit code, wall seconds)."""
  os.makedirs(workdir, exist_ok=True)
  cmd = command(base, overrides, workdir)
  start = time.time()
  with open(os.path.join(workdir, 'log.txt'), 'a') as log:
    rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
  return cmd, rc, time.time() - start


def write_record(workdir: str, record: dict) -> None:
  """ROOT/NAME/run.json: the run's final record, which says it finished and how it was made."""
  with open(os.path.join(workdir, 'run.json'), 'w') as f:
    json.dump(record, f, indent=2)


def launch(name: str, base: str, overrides: dict, root: str) -> dict:
  """Runs one run to completion unless it has finished before; returns its run.json record."""
  workdir = os.path.join(root, name)
  record_path = os.path.join(workdir, 'run.json')
  if os.path.exists(record_path):
    with open(record_path) as f:
      return json.load(f)
  if launcher.lock_held(workdir):  # another sweep, or a job, is training it now
    print(f'run {name} is running elsewhere; not started again', file=sys.stderr)
    return {}
  cmd, rc, wall_s = train(base, overrides, workdir)
  record = {'name': name, 'base': base, 'command': ' '.join(cmd[1:]), 'overrides': overrides,
            'returncode': rc, 'wall_s': round(wall_s, 1)}
  if rc == 0 and launcher.finished(workdir):  # a stopped run exits 0 too, and resumes next time
    write_record(workdir, record)
  else:
    print(f'run {name} did not finish (exit {rc}); see {workdir}/log.txt', file=sys.stderr)
  return record


def record_finished(root: str) -> None:
  """Writes the record of each run that SLURM trained to the end, with the settings its job was
  submitted with (ROOT/jobs.json), so a sweep of other settings finds it as it does a local run."""
  for name, job in launcher.read_jobs(root).items():
    workdir = os.path.join(root, name)
    if os.path.exists(os.path.join(workdir, 'run.json')) or not launcher.finished(workdir):
      continue
    times = [r['time'] for r in metric_writer.read_records(workdir)]
    base, overrides = job['base'], job['overrides']
    write_record(workdir, {
        'name': name, 'base': base, 'overrides': overrides, 'returncode': 0, 'job': job['id'],
        'command': ' '.join([launcher.SCRIPT, base, workdir, *override_flags(overrides)]),
        # From the first metrics record to the last: the waits between its jobs are included.
        'wall_s': round(times[-1] - times[0], 1)})


def submit_missing(runs: dict[str, dict], base: str, root: str,
                   resources: launcher.Resources) -> dict[str, launcher.State]:
  """Sends each run that is neither finished, running nor queued to SLURM, one job each, and
  records the job (its id and settings) in ROOT/jobs.json."""
  jobs = launcher.read_jobs(root)
  queued = launcher.queue() if jobs else {}
  states = {}
  for name, overrides in runs.items():
    workdir = os.path.join(root, name)
    states[name] = launcher.state(workdir, jobs.get(name, {}).get('id'), queued)
    if states[name].name in ('finished', 'running', 'queued'):
      continue
    job = launcher.submit(name, base, workdir, override_flags(overrides), resources)
    jobs[name] = {'id': job, 'base': base, 'overrides': _as_json(overrides)}
    launcher.write_jobs(root, jobs)  # at once: a refusal further on keeps what was sent
    states[name] = launcher.State('queued', f'job {job}, submitted now')
  return states


def status(runs: dict[str, dict], base: str, root: str) -> list[str]:
  """One line per run: where it stands (experiments/launcher.py), read from ROOT alone."""
  jobs = launcher.read_jobs(root)
  queued = launcher.queue() if jobs else {}
  width = max(map(len, runs))
  lines = []
  for name, overrides in runs.items():
    s = launcher.state(os.path.join(root, name), jobs.get(name, {}).get('id'), queued)
    detail = s.detail
    if s.name == 'finished' and (why := mismatch(name, base, overrides, root)):
      detail += f'; made with other settings: {why}'
    lines.append(f'{name:<{width}}  {s.name:<11}  {detail}'.rstrip())
  return lines


COLUMNS = ('run', 'train_top1_err', 'val_top1_err', 'val_top5_err', 'best_val_top1_err',
           'delta_top1', 'delta_top5', 'epochs', 'params', 'wall_min', 'overrides')


def summarize(name: str, root: str, overrides: dict) -> dict:
  workdir = os.path.join(root, name)
  metrics = metric_writer.read_by_split(workdir)
  train, val = metrics.get('train', []), metrics.get('val', [])
  row = {c: '' for c in COLUMNS}
  row.update(run=name, overrides=json.dumps(overrides))
  if train:
    row['train_top1_err'] = train[-1]['top1_err']
  if val:
    row.update(val_top1_err=val[-1]['top1_err'], val_top5_err=val[-1]['top5_err'],
               best_val_top1_err=min(r['top1_err'] for r in val), epochs=val[-1]['epoch'])
  if os.path.exists(p := os.path.join(workdir, 'run.json')):
    with open(p) as f:
      row['wall_min'] = round(json.load(f)['wall_s'] / 60, 1)
  if os.path.exists(p := os.path.join(workdir, 'model.json')):
    with open(p) as f:
      row['params'] = json.load(f).get('params', '')
  return row


def write_tables(rows: list[dict], root: str, title: str) -> str:
  """Adds the change against `baseline`, writes results.csv and results.md; returns the table."""
  base = next((r for r in rows if r['run'] == 'baseline'), None)
  for r in rows:
    if base and r['val_top1_err'] != '' and base['val_top1_err'] != '':
      r['delta_top1'] = round(100 * (r['val_top1_err'] - base['val_top1_err']), 2)
      r['delta_top5'] = round(100 * (r['val_top5_err'] - base['val_top5_err']), 2)
  with open(os.path.join(root, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  pct = lambda v: '' if v == '' else f'{100 * v:.1f}'
  lines = [f'### {title}', '',
           '| run | train top-1 err % | val top-1 err % | val top-5 err % | best val top-1 % '
           '| Δ top-1 | Δ top-5 | epochs | params | wall (min) |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in rows:
    delta = lambda v: '' if v == '' else f'{v:+.1f}'
    lines.append(f"| {r['run']} | {pct(r['train_top1_err'])} | {pct(r['val_top1_err'])} | "
                 f"{pct(r['val_top5_err'])} | {pct(r['best_val_top1_err'])} | "
                 f"{delta(r['delta_top1'])} | {delta(r['delta_top5'])} | {r['epochs']} | "
                 f"{r['params']} | {r['wall_min']} |")
  table = '\n'.join(lines) + '\n'
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(table)
  return table


def select(sweep: ablations.Sweep, common: dict = (), only=()) -> dict[str, dict]:
  """The sweep's runs (those `only` names, if any), each with the `common` overrides too."""
  unknown = set(only) - set(sweep.runs)
  if unknown:
    raise SystemExit(f'error: --only names runs the sweep does not have: {sorted(unknown)}; '
                     f'it has {sorted(sweep.runs)}.')
  return {n: {**dict(common), **o} for n, o in sweep.runs.items() if not only or n in only}


def run_sweep(sweep: ablations.Sweep, root: str, *, base: str = ablations.BASE, common: dict = (),
              only=(), parallel: int = 1, gather_only: bool = False, launch_with: str = 'local',
              resources: launcher.Resources = launcher.Resources()) -> list[dict]:
  """Runs the sweep's runs of config file `base` under `root` (skipping finished ones), each
  with `common` overrides too, and writes the tables. With launch_with='slurm' it submits the
  runs not finished, running or queued, and writes the tables once every run has finished
  (returning no rows until then)."""
  root = os.path.abspath(os.path.expanduser(root))
  os.makedirs(root, exist_ok=True)
  runs = select(sweep, common, only)
  record_finished(root)
  stale = {n: why for n, o in runs.items() if (why := mismatch(n, base, o, root))}
  if stale:  # a finished run of other settings would pass for this sweep's in the table
    raise SystemExit(
        f'error: {root} holds finished runs made with other settings than this sweep asks for: '
        + '; '.join(f'{n}: {why}' for n, why in stale.items()) + '. Give another --root, or '
        'delete those runs to train them with these settings.')
  if not gather_only and launch_with == 'slurm':
    states = submit_missing(runs, base, root, resources)
    done = sum(s.name == 'finished' for s in states.values())
    if done < len(runs):
      print('\n'.join(status(runs, base, root)))
      print(f'{done} of {len(runs)} runs finished; the same command submits what is missing '
            'and gathers the table once all have.')
      return []
  elif not gather_only:
    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
      list(pool.map(lambda item: launch(item[0], base, item[1], root), runs.items()))
  rows = [summarize(n, root, o) for n, o in runs.items()]
  print(write_tables(rows, root, f'{sweep.title} ({base})'))
  return rows


def main(argv):
  del argv
  logs.quiet_library_logs()
  options = flags.FLAGS
  if not options.sweep or not options.root:
    raise SystemExit('error: give --sweep (one of: ' + ', '.join(sorted(ablations.SWEEPS)) +
                     ') and --root (the folder for the runs).')
  resources = launcher.Resources(options.nodes, options.gpus_per_node, options.time,
                                 options.partition)
  if options.launcher == 'local' and resources.sbatch_flags():
    raise SystemExit('error: --nodes, --gpus_per_node, --time and --partition are for SLURM '
                     'jobs: add --launcher=slurm, or leave them out to train here.')
  sweep, base, common = ablations.SWEEPS[options.sweep], cli.config_file(), cli.overrides()
  if options.status:
    root = os.path.abspath(os.path.expanduser(options.root))
    print('\n'.join(status(select(sweep, common, options.only), base, root)))
    return
  run_sweep(sweep, options.root, base=base, common=common, only=options.only,
            parallel=options.parallel, gather_only=options.gather_only,
            launch_with=options.launcher, resources=resources)


if __name__ == '__main__':  # flags only when run as a program: figure scripts import this module
  flags.DEFINE_enum('sweep', None, sorted(ablations.SWEEPS), 'Which sweep to run.')
  flags.DEFINE_string('root', None, 'Folder for the runs (one workdir per run) and the tables.')
  cli.define_config_file(ablations.BASE, 'The base config file; --config.FIELD=VALUE changes a '
                         'field for every run.')
  flags.DEFINE_list('only', [], 'Run only these of the sweep\'s runs.')
  flags.DEFINE_integer('parallel', 1, 'Runs at once (each in its own process; local launcher).')
  flags.DEFINE_bool('gather_only', False, 'Only rebuild the table from the workdirs.')
  flags.DEFINE_bool('status', False, 'Print where each run stands, one line per run, and stop.')
  flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'Train the runs here, or submit '
                    'one SLURM job per run (experiments/slurm/train.sbatch).')
  flags.DEFINE_integer('nodes', None, 'Nodes per job (default: train.sbatch\'s).')
  flags.DEFINE_integer('gpus_per_node', None, 'GPUs per node of each job (default: '
                       'train.sbatch\'s).')
  flags.DEFINE_string('time', None, 'Time limit per job, as sbatch --time takes it (default: '
                      'train.sbatch\'s).')
  flags.DEFINE_string('partition', None, 'SLURM partition (default: the cluster\'s).')
  app.run(main, flags_parser=cli.parse_flags)
