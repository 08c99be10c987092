"""What a data engineer asks of a finished run: summary, sample, diff, HTML report.

Pure functions over a parsed manifest and file access passed in, so they work
the same on local and gs:// directories. ``inspect verify`` is ``run_store.verify``,
the check shared with training and the derived pipelines; ``sample`` applies its
shard check to every shard it reads.
"""
