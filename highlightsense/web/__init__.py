"""The web app's library: everything ``app.py`` (page layout and event wiring) stands on.

controls  the page's settings, checked again on the server for API callers
messages  library errors → one sentence a visitor (or the Space's owner) can act on
jobs      a visitor's jobs, their progress, limits on time and disk
library   the one place that calls the analysis library: models, GPU calls, analyse, render
example   the demo VOD, made once in the background
view      what the page shows for a job (summary, table, gallery, downloads, plots)
framing   the Vertical (9:16) choice: boxes, clicks and the pictures that show them
page      what every page event answers (one value per component) and its error sentence
vertical_panel  the Vertical (9:16) panel's handlers
service   the handlers the page and the /detect endpoint call

Importing these modules does nothing beyond defining things; :class:`service.Service` does its
start-up work (models, sweeps, the example) when it is started.
"""
