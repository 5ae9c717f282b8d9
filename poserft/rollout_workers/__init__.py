"""poserft.rollout_workers"""
