"""Full-ranking evaluation shared by every model and baseline."""
