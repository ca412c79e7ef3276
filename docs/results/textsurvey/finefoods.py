# r-cran-modeldata: small_fine_foods = training_data + testing_data in data/Rdata.rdb (xz-compressed lazy-load DB)
import sys, re; sys.path.insert(0,"/tmp/textsurvey")
from rd import load; from count import stats
o=load("debs/x/r-cran-modeldata/usr/lib/R/site-library/modeldata/data", ["training_data","testing_data"])
revs=o["training_data"]["review"]+o["testing_data"]["review"]
u=stats([re.sub(r"<[^>]+>"," ",r) for r in revs],"modeldata small_fine_foods", show=5)
open("out_finefoods.txt","w").write("\n".join(u))
o=load("debs/x/r-cran-stringr/usr/lib/R/site-library/stringr/data", ["sentences"])
stats(o["sentences"],"stringr Harvard sentences",show=3)
