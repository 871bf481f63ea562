import re,glob,statistics,sys
d={}
# Medians of the alternating runs (SPOOL_ENQUEUE_LEASE on and off), from the repository's root.
for f in sorted(glob.glob('bench/results/enqueue-lease/main/*-*/summary.md')):
    v=f.split('/')[-2].split('-')[0]
    for ln in open(f):
        m=re.match(r'^\| (.+?) \| ([0-9.]+) \[',ln)
        if m:
            d.setdefault(m.group(1),{}).setdefault(v,[]).append(float(m.group(2)))
keys=[k for k in d if '÷' in k or 'p99' in k or 'drain, HTTP' in k or 'single-task enqueues' in k or 'drain of the singly' in k or 'CPU s/1k' in k]
for k in keys:
    row=d[k]
    s=f"{k[:95]:95s}"
    for v in ('on','off'):
        if v in row:
            s+=f" {v} {statistics.median(row[v]):8.3f} {row[v]}"
    print(s)
