"""mtlschat.client"""
