"""poserft.learner"""
