"""Raw-dataset readers (ACDC, M&Ms, M&Ms-2), harmonization, and the multi-vendor phantom cohort."""
