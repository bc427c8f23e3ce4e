"""Search analytics: hourly rollups of the search log (``fold``) and what the dashboard reads from them (``report``)."""
