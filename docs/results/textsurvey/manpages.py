import sys,re,glob,gzip; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
def paras():
    for f in glob.glob("debs/x/manpages/usr/share/man/man*/*.gz"):
        t=gzip.open(f,"rt",errors="replace").read(); cur=[]; skip=False
        for ln in t.split("\n"):
            if ln.startswith((".nf",".EX")): skip=True
            if ln.startswith((".fi",".EE")): skip=False; continue
            if skip: continue
            if ln.startswith((".PP",".SH",".TP",".IP",".P ",".SS",".LP")) or not ln.strip():
                if cur: yield " ".join(cur); cur=[]
                continue
            ln=re.sub(r"^\.(B|I|BR|IR|RB|RI|BI|IB)\s+","",ln)
            if ln.startswith(".") or ln.startswith("'\\\""): continue
            cur.append(re.sub(r"\\f[BIRP]|\\f\(..|\\\*\(..|\\&|\\-","",ln).replace('"',''))
        if cur: yield " ".join(cur)
stats(paras(),"manpages",show=3)
