"""poserft.cluster"""
