"""MRI-Processor: from raw scans to model-ready volumes (N4, registration, skull strip,
resampling, normalisation), the ASLNet ROI and feature channels, and the resumable cohort runner."""
