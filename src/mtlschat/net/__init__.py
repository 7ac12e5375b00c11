"""mtlschat.net"""
