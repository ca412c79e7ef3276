import email, glob, re, sys
from email import policy
sys.path.insert(0, "/tmp/textsurvey"); from count import stats
base = "npm/stdlib/package/spam-assassin/data/"
def bodies(groups):
    for g in groups:
        for f in sorted(glob.glob(base + g + "/*.txt")):
            msg = email.message_from_bytes(open(f, "rb").read(), policy=policy.compat32)
            for part in msg.walk():
                if part.get_content_type() == "text/plain":
                    try: t = part.get_payload(decode=True).decode("latin-1")
                    except Exception: continue
                    t = t.split("\n-- \n")[0]
                    t = re.split(r"\n_{10,}|\n-{5,} ?Original Message|\nOn .{5,80} wrote:", t)[0]
                    paras, cur = [], []
                    for ln in t.splitlines():
                        if ln.startswith((">", "|")) or re.search(r"https?:|www\.|@", ln):
                            ln = ""
                        if ln.strip(): cur.append(ln)
                        else:
                            if cur: paras.append(" ".join(cur)); cur = []
                    if cur: paras.append(" ".join(cur))
                    yield from paras
ham = stats(bodies(["easy-ham-1", "easy-ham-2", "hard-ham-1"]), "spamassassin ham", show=15)
open("out_spam_ham.txt","w").write("\n".join(ham))
