"""The study statistics of src/eval/stats.c against independent references, on cases drawn with a
fixed seed (random.Random(2508)):
- exact McNemar: the binomial tail of Bin(b + c, 1/2) summed in exact rational arithmetic
  (fractions + math.comb), two-sided and mid-p;
- Student t quantile: mpmath's regularised incomplete beta at 50 digits, root-found;
  the 95% mean interval from it;
- bootstrap: the same xoshiro256** stream (splitmix64 seeding, Blackman & Vigna) replayed in
  Python, each replicate's resampled units x prompts built explicitly, percentiles by numpy's
  "linear" rule (numpy.percentile when numpy is present, else the formula)."""
import math, random, subprocess, sys
from fractions import Fraction

try:
    import mpmath
except ImportError:
    print("SKIP: mpmath not installed"); sys.exit(77)
mpmath.mp.dps = 50
tool = sys.argv[1]
rng = random.Random(2508)
M64 = (1 << 64) - 1


def fail(msg):
    print("FAIL:", msg); sys.exit(1)


def close(a, b, rel, what):
    if math.isnan(b) and math.isnan(a):
        return
    if not abs(a - b) <= rel * max(abs(b), 1e-300) + 1e-300:
        fail(f"{what}: {a!r} != {b!r}")


# ---- references
def mcnemar(b, c, mid):
    n, m = b + c, min(b, c)
    if n == 0:
        return 1.0
    cdf = sum(Fraction(math.comb(n, j), 2 ** n) for j in range(m + 1))
    pm = Fraction(math.comb(n, m), 2 ** n)
    p = 2 * (cdf - pm / 2 if mid else cdf)
    return float(min(p, 1))


def tq(p, df):
    p, df = mpmath.mpf(p), mpmath.mpf(df)
    if p == 0.5:
        return 0.0
    q = 1 - p if p > 0.5 else p  # lower tail mass beyond |t|
    f = lambda t: mpmath.betainc(df / 2, mpmath.mpf(1) / 2, 0, df / (df + t * t), regularized=True) / 2 - q
    lo, hi = mpmath.mpf(0), mpmath.mpf(1)
    while f(hi) > 0:
        lo, hi = hi, hi * 2
    t = mpmath.findroot(f, (lo, hi), solver="bisect" if False else "anderson")
    return float(t if p > 0.5 else -t)


def mean_ci(xs):
    n = len(xs)
    m = math.fsum(xs) / n
    if n < 2:
        return n, m, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))
    h = tq(0.975, n - 1) * sd / math.sqrt(n)
    return n, m, sd, m - h, m + h


class Xoshiro:
    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed = (seed + 0x9E3779B97F4A7C15) & M64
            z = seed
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def next(self):
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def pct(v, q):
    v = sorted(v)
    try:
        import numpy
        return float(numpy.percentile(numpy.array(v), q * 100, method="linear"))
    except ImportError:
        h = (len(v) - 1) * q; i = math.floor(h)
        return v[-1] if i + 1 >= len(v) else v[i] + (h - i) * (v[i + 1] - v[i])


def boot(A, B, nboot, seed):
    na, nb, np_ = len(A), len(B), len(A[0])
    r = Xoshiro(seed)
    diffs = []
    for _ in range(nboot):
        ua = [r.next() % na for _ in range(na)]
        ub = ua if na == nb else [r.next() % nb for _ in range(nb)]
        pj = [r.next() % np_ for _ in range(np_)]
        ka = sum(A[u][j] for u in ua for j in pj)
        kb = sum(B[u][j] for u in ub for j in pj)
        diffs.append(ka / (na * np_) - kb / (nb * np_))
    full = sum(map(sum, A)) / (na * np_) - sum(map(sum, B)) / (nb * np_)
    return full, pct(diffs, 0.025), pct(diffs, 0.975)


# ---- the splitmix64 seeding must match base/rng.c: check the first outputs against the C RNG's
# documented algorithm by consistency (the bootstrap replay below fails on any mismatch).
cases, refs = [], []
for b, c in [(0, 0), (0, 5), (5, 0), (1, 1), (3, 9), (10, 10), (0, 1), (25, 40), (200, 260), (1, 30)]:
    for mid in (0, 1):
        cases.append(f"mcnemar {b} {c} {mid}"); refs.append(("p", mcnemar(b, c, mid)))
for _ in range(20):
    b, c = rng.randint(0, 80), rng.randint(0, 80)
    mid = rng.randint(0, 1)
    cases.append(f"mcnemar {b} {c} {mid}"); refs.append(("p", mcnemar(b, c, mid)))
for p, df in [(0.975, 1), (0.975, 2), (0.975, 3), (0.975, 4), (0.975, 9), (0.975, 29), (0.975, 200),
              (0.5, 3), (0.025, 4), (0.9, 2.5), (0.999, 1), (0.6, 7)]:
    cases.append(f"tq {p!r} {df!r}"); refs.append(("t", tq(p, df)))
for n in [1, 2, 3, 4, 5, 8]:
    xs = [rng.random() for _ in range(n)]
    cases.append("mean %d %s" % (n, " ".join(repr(x) for x in xs))); refs.append(("m", mean_ci(xs)))
for na, nb, np_, nboot in [(3, 3, 40, 500), (1, 1, 128, 300), (5, 5, 17, 400), (3, 2, 30, 300), (2, 4, 9, 200)]:
    pa, pb = rng.random(), rng.random()
    A = [[int(rng.random() < pa) for _ in range(np_)] for _ in range(na)]
    B = [[int(rng.random() < pb) for _ in range(np_)] for _ in range(nb)]
    seed = rng.randint(0, 2 ** 63)
    sa = "".join(str(x) for row in A for x in row); sb = "".join(str(x) for row in B for x in row)
    cases.append(f"boot {na} {nb} {np_} {nboot} {seed} {sa} {sb}"); refs.append(("b", boot(A, B, nboot, seed)))

r = subprocess.run([tool], input="\n".join(cases) + "\n", capture_output=True, text=True)
if r.returncode != 0:
    fail(f"stats_tool exit {r.returncode}: {r.stderr}")
out = r.stdout.strip().splitlines()
if len(out) != len(cases):
    fail(f"{len(out)} results for {len(cases)} cases")
for case, (kind, ref), got in zip(cases, refs, out):
    v = [float(x) for x in got.split()]
    what = case[:60]
    if kind == "p":
        close(v[0], ref, 1e-10, what)
    elif kind == "t":
        close(v[0], ref, 1e-11, what)
    elif kind == "m":
        if int(v[0]) != ref[0]:
            fail(f"{what}: n {v[0]} != {ref[0]}")
        for a, b in zip(v[1:], ref[1:]):
            close(a, b, 1e-11, what)
    else:
        for a, b in zip(v, ref):
            if a != b and not abs(a - b) <= 1e-15:
                fail(f"{what}: bootstrap {v} != {ref}")
# hand-known values as a second anchor: t_{0.975,1} = tan(0.475 pi); McNemar b=0, c=5: 2/32
close(float(out[len([c for c in cases if c.startswith("mcnemar")])].split()[0]), math.tan(0.475 * math.pi), 1e-11, "t df=1 closed form")
close(float(out[2].split()[0]), 2 / 32, 1e-14, "mcnemar 0 5")
print(f"OK: {len(cases)} cases (McNemar exact/mid-p, t quantiles, mean intervals, bootstrap replay)")
