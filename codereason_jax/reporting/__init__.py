"""The pieces of the reports: number formats, paired significance, the paper's published
tables and claims, small-multiple panels, and the markdown/HTML documents they make."""
