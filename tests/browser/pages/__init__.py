"""Static test pages for the browser tests (served with ``static_server.serve``)."""
