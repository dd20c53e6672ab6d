"""Reporting: the HTML page and PNGs of a scores file (``page``, its template in
``templates/``) and one record inspected token by token (``inspection``). Scores enter,
``report.html`` and token tables leave.
"""
