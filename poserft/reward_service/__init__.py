"""poserft.reward_service"""
