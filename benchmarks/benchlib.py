from common import *  # noqa: F401,F403  (bench_tweets.py still imports the old name; remove once it imports common)
from common import ROOT  # noqa: F401
