//! jobq-observer (see ../shared/DESIGN.md); the service arrives with the pipeline issue.
