"""mtlschat.ca"""
