//! Vote-staleness alerts (being written).
