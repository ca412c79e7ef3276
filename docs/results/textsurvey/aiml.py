import sys, re, glob, yaml; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
pats=[]; temps=[]
for f in glob.glob("pypi/aiml/python-aiml-0.9.3/aiml/botdata/alice/*.aiml"):
    t=open(f,encoding="utf-8",errors="replace").read()
    for cat in re.findall(r"<category>(.*?)</category>", t, re.S):
        p=re.search(r"<pattern>(.*?)</pattern>",cat,re.S); tm=re.search(r"<template>(.*?)</template>",cat,re.S)
        if p and not re.search(r"[*_<]",p.group(1)): pats.append(p.group(1).strip())
        if tm and not re.search(r"<(srai|sr|star|get|set|condition|random|think|that|input|person|formal|date|bot|li)\b", tm.group(1)):
            temps.append(re.sub(r"<[^>]+>"," ",tm.group(1)))
up=list(dict.fromkeys(p for p in pats if 5<=len(p.split())<=40))
print("aiml patterns (no wildcard, 5-40w, unique):", len(up), sum(len(p.split()) for p in up), up[:5])
u=stats(temps,"aiml templates (plain)",show=6)
def conv(o):
    if isinstance(o,str): yield o
    elif isinstance(o,list):
        for x in o: yield from conv(x)
cb=[]
for f in glob.glob("pypi/cb/chatterbot_corpus/data/english/*.yml"):
    d=yaml.safe_load(open(f)); cb+=list(conv(d.get("conversations",[])))
stats(cb,"chatterbot-corpus english",show=5)
