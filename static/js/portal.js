// Small behaviours only; htmx does the requests.
